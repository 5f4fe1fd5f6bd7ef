-- Tokens expire; users can be disabled.
ALTER TABLE tokens ADD COLUMN expires_ms BIGINT;
ALTER TABLE users ADD COLUMN disabled_ms BIGINT;
