-- Extension requests: a request may extend an existing allocation (more
-- GPU-hours, a later end) instead of granting a new one. Each extension
-- applied is recorded with its request, in the transaction that changes
-- the allocation, so that an approval cut by a stop is finished once.
ALTER TABLE access_requests ADD COLUMN extends_id BIGINT REFERENCES allocations(id);
CREATE TABLE allocation_extensions (
    request_id BIGINT PRIMARY KEY,
    allocation_id BIGINT NOT NULL REFERENCES allocations(id),
    gpu_s DOUBLE PRECISION NOT NULL,
    days DOUBLE PRECISION NOT NULL,
    at_ms BIGINT NOT NULL
);
