-- Interactive sessions (docs/sessions.md): an app run as a job and reached
-- through the server's proxy. `token` is the app's own secret: the proxy
-- sends it, the browser never sees it.
CREATE TABLE sessions (
    id BIGINT PRIMARY KEY,
    job_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    org_id BIGINT NOT NULL,
    app TEXT NOT NULL,
    port BIGINT NOT NULL,
    token TEXT NOT NULL,
    idle_timeout_s BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    last_activity_ms BIGINT,
    ended_ms BIGINT,
    ended_reason TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id, id);
