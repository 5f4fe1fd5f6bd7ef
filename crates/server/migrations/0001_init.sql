-- gigafab control-plane schema; portable between SQLite and PostgreSQL.
-- Times are milliseconds since the Unix epoch; ids are assigned by the server.
CREATE TABLE orgs (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE projects (
    id BIGINT PRIMARY KEY,
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (org_id, name)
);
CREATE TABLE users (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    org_id BIGINT REFERENCES orgs(id),
    role TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE tokens (
    id BIGINT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    hash TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE TABLE allocations (
    id BIGINT PRIMARY KEY,
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    granted_gpu_s DOUBLE PRECISION NOT NULL,
    used_gpu_s DOUBLE PRECISION NOT NULL,
    valid_from_ms BIGINT NOT NULL,
    valid_until_ms BIGINT NOT NULL,
    qos_priority BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE jobs (
    id BIGINT PRIMARY KEY,
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    alloc_id BIGINT NOT NULL REFERENCES allocations(id),
    project_id BIGINT,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    gpus BIGINT NOT NULL,
    time_limit_s BIGINT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    exit_code BIGINT,
    submitted_ms BIGINT NOT NULL,
    started_ms BIGINT,
    ended_ms BIGINT,
    accelerators TEXT,
    handle TEXT,
    gpu_s DOUBLE PRECISION NOT NULL
);
CREATE INDEX jobs_by_state ON jobs (state);
CREATE INDEX jobs_by_org ON jobs (org_id, id);
CREATE TABLE job_events (
    job_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE audit (
    id BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    user_id BIGINT,
    user_name TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE drained_nodes (
    name TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL
);
