-- The Contact table of SPEC §2. Every statement is idempotent: `make db-init` may run
-- this file any number of times.
--
-- Names are unquoted, so PostgreSQL folds them to lower case (phonenumber, linkedid, ...).

CREATE TABLE IF NOT EXISTS contact (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phoneNumber    varchar(16),
    email          varchar(255),
    linkedId       integer REFERENCES contact (id),
    linkPrecedence text NOT NULL,
    createdAt      timestamptz NOT NULL DEFAULT now(),
    updatedAt      timestamptz NOT NULL DEFAULT now(),
    deletedAt      timestamptz,

    CONSTRAINT contact_link_precedence_valid
        CHECK (linkPrecedence IN ('primary', 'secondary')),
    -- A primary links to nothing; a secondary always names its primary (SPEC §6.1).
    CONSTRAINT contact_primary_has_no_link
        CHECK ((linkPrecedence = 'primary') = (linkedId IS NULL)),
    CONSTRAINT contact_has_an_identifier
        CHECK (email IS NOT NULL OR phoneNumber IS NOT NULL)
);

-- Every look-up the service makes is by one of these columns on live rows only, so the
-- indexes are partial: deleted rows neither cost space nor get in the way of a scan.
CREATE INDEX IF NOT EXISTS contact_email_live ON contact (email) WHERE deletedAt IS NULL;
CREATE INDEX IF NOT EXISTS contact_phone_number_live ON contact (phoneNumber) WHERE deletedAt IS NULL;
CREATE INDEX IF NOT EXISTS contact_linked_id_live ON contact (linkedId) WHERE deletedAt IS NULL;

-- updatedAt follows every update, whoever makes it (SPEC §2).
CREATE OR REPLACE FUNCTION contact_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updatedAt := clock_timestamp();
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER contact_touch_updated_at
    BEFORE UPDATE ON contact
    FOR EACH ROW EXECUTE FUNCTION contact_touch_updated_at();
