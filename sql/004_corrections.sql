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
