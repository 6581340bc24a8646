-- Merge history: one row per change the service makes to the contact table, written in
-- the same transaction as the change. Append-only: a trigger refuses UPDATE and DELETE.
--
--   customer_created  contact_id is a new primary (primary_id = contact_id)
--   secondary_added   contact_id is a new secondary of primary_id
--   primary_demoted   contact_id, a primary, became a secondary of primary_id; email and
--                     phone_number are the request's values that bridged the customers
--   rows_repointed    the secondaries in repointed_ids, which pointed at contact_id (the
--                     demoted primary), now point at primary_id
--
-- Replaying the events in id order rebuilds every row's link (tests/test_history.py).

CREATE TABLE IF NOT EXISTS contact_event (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurredAt    timestamptz NOT NULL DEFAULT clock_timestamp(),
    requestId     text,
    kind          text NOT NULL,
    contactId     integer NOT NULL REFERENCES contact (id),
    primaryId     integer NOT NULL REFERENCES contact (id),
    email         varchar(255),
    phoneNumber   varchar(16),
    repointedIds  integer[],

    CONSTRAINT contact_event_kind_valid CHECK (
        kind IN ('customer_created', 'secondary_added', 'primary_demoted', 'rows_repointed'))
);

CREATE INDEX IF NOT EXISTS contact_event_contact ON contact_event (contactId);

CREATE OR REPLACE FUNCTION contact_event_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'contact_event is append-only';
END
$$;

CREATE OR REPLACE TRIGGER contact_event_append_only
    BEFORE UPDATE OR DELETE ON contact_event
    FOR EACH ROW EXECUTE FUNCTION contact_event_append_only();
