-- Model endpoints (docs/endpoints.md): a catalog model served by replicas
-- (jobs whose spec names the endpoint), its API keys (hashed), its
-- autoscaler's decisions, and what it served per key.
CREATE TABLE endpoints (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    org_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    alloc_id BIGINT NOT NULL,
    project TEXT,
    -- JSON of the endpoint's settings (model, command, scaling, ...)
    spec TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    deleted_ms BIGINT
);
-- one live endpoint of a name
CREATE UNIQUE INDEX endpoints_live_name ON endpoints (name) WHERE deleted_ms IS NULL;

CREATE TABLE endpoint_keys (
    id BIGINT PRIMARY KEY,
    endpoint_id BIGINT NOT NULL,
    name TEXT,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_by BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    revoked_ms BIGINT,
    requests BIGINT NOT NULL DEFAULT 0,
    errors BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX endpoint_keys_endpoint ON endpoint_keys (endpoint_id);

CREATE TABLE endpoint_events (
    id BIGINT PRIMARY KEY,
    endpoint_id BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    from_replicas BIGINT NOT NULL,
    to_replicas BIGINT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX endpoint_events_endpoint ON endpoint_events (endpoint_id, id);

-- the endpoint a job is a replica of
ALTER TABLE jobs ADD COLUMN endpoint_id BIGINT;
CREATE INDEX jobs_endpoint ON jobs (endpoint_id);
