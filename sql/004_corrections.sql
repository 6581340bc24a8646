-- History kinds for re-linking and corrections, and rows emptied by corrections.
-- Idempotent: every statement may run again.
--
--   customer_split   contact_id (= primary_id) is the primary of a customer whose rows
--                    were linked again by SPEC §5's rule: orphans of a soft-deleted
--                    primary, or the rows left after a detach; repointed_ids are the rows
--                    that now point at it (replay: contact_id becomes a primary, each of
--                    repointed_ids its secondary)
--   value_detached   the e-mail or phone number (its column set, the other null) was
--                    removed from contact_id, the primary_id customer's row
--   customer_erased  the customer of primary_id was erased; no personal data

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_constraint
         WHERE conname = 'contact_event_kind_valid'
           AND pg_get_constraintdef(oid) LIKE '%customer_erased%'
    ) THEN
        ALTER TABLE contact_event DROP CONSTRAINT IF EXISTS contact_event_kind_valid;
        ALTER TABLE contact_event ADD CONSTRAINT contact_event_kind_valid CHECK (
            kind IN ('customer_created', 'secondary_added', 'primary_demoted', 'rows_repointed',
                     'customer_split', 'value_detached', 'customer_erased'));
    END IF;
END
$$;

-- Corrections (detach, erase) leave rows with neither value; they are always soft-deleted.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_constraint
         WHERE conname = 'contact_has_an_identifier'
           AND pg_get_constraintdef(oid) LIKE '%deletedat%'
    ) THEN
        ALTER TABLE contact DROP CONSTRAINT IF EXISTS contact_has_an_identifier;
        ALTER TABLE contact ADD CONSTRAINT contact_has_an_identifier
            CHECK (email IS NOT NULL OR phoneNumber IS NOT NULL OR deletedAt IS NOT NULL);
    END IF;
END
$$;

-- The stored blocklist: values support detached with "block": true. Every server
-- process treats them like the configured blocklist's values (identity/blocklist.py).
-- lockKey is the value's advisory-lock key (identity/repository.py, value_lock_keys):
-- writers look it up while they hold that lock, without sending the value.
CREATE TABLE IF NOT EXISTS blocked_value (
    kind       text NOT NULL CHECK (kind IN ('email', 'phoneNumber')),
    value      varchar(255) NOT NULL,
    lockKey    bigint NOT NULL,
    blockedAt  timestamptz NOT NULL DEFAULT now(),
    requestId  text,
    PRIMARY KEY (kind, value)
);

CREATE INDEX IF NOT EXISTS blocked_value_lock_key ON blocked_value (lockKey);

-- The history stays append-only, with one exception: erasure (SPEC §9) nulls the e-mail
-- and phone number of events, and nothing else, in a transaction that has set
-- identity.erasing (set_config(..., true): until the end of that transaction only).
-- This guards against mistakes, not against a database user who means harm.
CREATE OR REPLACE FUNCTION contact_event_erase_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('identity.erasing', true) = 'on'
       AND NEW.email IS NULL AND NEW.phoneNumber IS NULL
       AND (NEW.id, NEW.occurredAt, NEW.requestId, NEW.kind, NEW.contactId, NEW.primaryId,
            NEW.repointedIds)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.occurredAt, OLD.requestId, OLD.kind, OLD.contactId, OLD.primaryId,
            OLD.repointedIds)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'contact_event is append-only';
END
$$;

CREATE OR REPLACE TRIGGER contact_event_append_only
    BEFORE UPDATE OR DELETE ON contact_event
    FOR EACH ROW EXECUTE FUNCTION contact_event_erase_only();
