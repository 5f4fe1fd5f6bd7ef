-- Notifications: users' e-mail addresses, and the outbox that a
-- transition writes in its own transaction and the mailer drains.
ALTER TABLE users ADD COLUMN email TEXT;
CREATE TABLE outbox (
    id BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_ms BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX outbox_unsent ON outbox (sent_ms, id);
