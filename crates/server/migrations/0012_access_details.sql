-- The one-stop shop's eligibility and request details: an organisation's
-- country (ISO 3166-1 alpha-2), a call's eligible countries and offered
-- accelerator types (JSON arrays, empty: any), a request's GPU-hours per
-- accelerator type, data residency needs and team (JSON object).
ALTER TABLE orgs ADD COLUMN country TEXT;
ALTER TABLE calls ADD COLUMN countries TEXT NOT NULL DEFAULT '[]';
ALTER TABLE calls ADD COLUMN types TEXT NOT NULL DEFAULT '[]';
ALTER TABLE access_requests ADD COLUMN details TEXT NOT NULL DEFAULT '{}';
