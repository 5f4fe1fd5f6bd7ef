-- Sign-in through the site's OpenID Connect provider: the `sub` claim of
-- a user's identity there (opaque and permanent), unique.
ALTER TABLE users ADD COLUMN oidc_subject TEXT;
CREATE UNIQUE INDEX users_oidc_subject ON users (oidc_subject);
