-- The one-stop shop: access calls, their reviewers, requests and reviews.
CREATE TABLE calls (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    mode TEXT NOT NULL,
    categories TEXT NOT NULL,
    envelope_gpu_s DOUBLE PRECISION NOT NULL,
    granted_gpu_s DOUBLE PRECISION NOT NULL DEFAULT 0,
    opens_ms BIGINT NOT NULL,
    closes_ms BIGINT,
    created_ms BIGINT NOT NULL
);
CREATE TABLE call_reviewers (
    call_id BIGINT NOT NULL REFERENCES calls(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    PRIMARY KEY (call_id, user_id)
);
CREATE TABLE access_requests (
    id BIGINT PRIMARY KEY,
    call_id BIGINT NOT NULL REFERENCES calls(id),
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    title TEXT NOT NULL,
    summary TEXT NOT NULL,
    project TEXT NOT NULL,
    gpu_s DOUBLE PRECISION NOT NULL,
    days DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,
    allocation_id BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX access_requests_call ON access_requests (call_id);
CREATE TABLE reviews (
    request_id BIGINT NOT NULL REFERENCES access_requests(id),
    reviewer_id BIGINT NOT NULL REFERENCES users(id),
    score BIGINT NOT NULL,
    verdict TEXT NOT NULL,
    comment TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (request_id, reviewer_id)
);
