-- The data and model catalog: entries (owner organisation, kind, access,
-- SPDX licence, card, residency: the sites where it may be stored and
-- processed), immutable versions pinned by their manifest's hash, movable
-- aliases, grants of gated entries (with expiry) and requests for them.
CREATE TABLE catalog_entries (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    kind TEXT NOT NULL,
    access TEXT NOT NULL,
    licence TEXT NOT NULL,
    card TEXT NOT NULL,
    residency TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE catalog_versions (
    entry_id BIGINT NOT NULL REFERENCES catalog_entries(id),
    version BIGINT NOT NULL,
    manifest_hash TEXT NOT NULL,
    files BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    -- a store key (`v/...`), or the absolute path of a version registered in place
    location TEXT NOT NULL,
    in_place BIGINT NOT NULL,
    manifest TEXT NOT NULL,
    lineage TEXT NOT NULL,
    job_id BIGINT,
    user_id BIGINT NOT NULL REFERENCES users(id),
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (entry_id, version),
    UNIQUE (entry_id, manifest_hash)
);
CREATE TABLE catalog_aliases (
    entry_id BIGINT NOT NULL REFERENCES catalog_entries(id),
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (entry_id, alias)
);
CREATE TABLE catalog_grants (
    entry_id BIGINT NOT NULL REFERENCES catalog_entries(id),
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    expires_ms BIGINT,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (entry_id, org_id)
);
CREATE TABLE catalog_access_requests (
    entry_id BIGINT NOT NULL REFERENCES catalog_entries(id),
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    reason TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (entry_id, org_id)
);
-- A job's output registered as a model version once it completed (or why
-- it was not): each job's output is taken once.
CREATE TABLE catalog_outputs (
    job_id BIGINT PRIMARY KEY REFERENCES jobs(id),
    -- none: the job named no output model after all (a spec that only
    -- mentions the word), taken so that the scan passes it
    entry_id BIGINT REFERENCES catalog_entries(id),
    version BIGINT,
    message TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
