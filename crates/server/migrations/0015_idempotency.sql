-- Idempotency keys of creating requests (`Idempotency-Key`): a retry with
-- the same key by the same user gets what its first try made (a job, an
-- allocation, an access request), for 24 hours.
CREATE TABLE idempotency_keys (
    user_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    object_id BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_ms);
