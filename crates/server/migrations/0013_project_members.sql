-- Project members (made at an access request's approval from its applicant
-- and team, or by an owner): with members, only they and the
-- organisation's owners run jobs in the project. An allocation granted to
-- a project runs that project's jobs only. Comments on access requests,
-- by applicants and reviewers.
CREATE TABLE project_members (
    project_id BIGINT NOT NULL REFERENCES projects(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    added_ms BIGINT NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
ALTER TABLE allocations ADD COLUMN project_id BIGINT REFERENCES projects(id);
CREATE TABLE request_comments (
    id BIGINT PRIMARY KEY,
    request_id BIGINT NOT NULL REFERENCES access_requests(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    side TEXT NOT NULL,
    body TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX request_comments_request ON request_comments (request_id);
