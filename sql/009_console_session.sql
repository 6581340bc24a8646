-- The support console's sessions, kept by the server so that they can be ended.
-- Idempotent: every statement may run again.
--
-- A row per signed-in session. The browser's signed cookie holds a random session key;
-- the row is keyed by the key's SHA-256, so that whoever reads this table cannot present
-- a session. Sign-out deletes the row, which ends every copy of the cookie at once; a row
-- older than the session lifetime (8 hours) is refused whatever its use, and deleted at
-- the next sign-in.
--
--   id           hex SHA-256 of the cookie's session key
--   tokenDigest  hex SHA-256 of the support token signed in with (the token id is its
--                first 8 digits): a session lives only while its token is configured
--   signedInAt   when the session began; its age is measured from here, never renewed
CREATE TABLE IF NOT EXISTS console_session (
    id          text PRIMARY KEY,
    tokenDigest text NOT NULL,
    signedInAt  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS console_session_signed_in ON console_session (signedInAt);
