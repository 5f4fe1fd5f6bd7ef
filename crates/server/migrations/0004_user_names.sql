-- User names are private to their organisation: two organisations may each
-- have an `alice`. The stored name of an organisation's member becomes its
-- login `ORG/NAME` (unique, as the column's constraint wants); users of no
-- organisation (admins, operators) keep their plain name. Both SQLite and
-- PostgreSQL understand this statement.
UPDATE users
SET name = (SELECT o.name FROM orgs o WHERE o.id = users.org_id) || '/' || name
WHERE org_id IS NOT NULL AND name NOT LIKE '%/%';
