-- Idempotency keys of job submissions (`Idempotency-Key`): a retry with
-- the same key gets the job its first try made, for 24 hours.
CREATE TABLE idempotency_keys (
    user_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    job_id BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_ms);
