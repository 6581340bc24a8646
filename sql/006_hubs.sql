-- The hub alarm: values that glue too many strangers into one customer. Idempotent: every
-- statement may run again.
--
-- One row per suspected hub, written by the write that made the value cross the threshold,
-- in that write's transaction. At most one unresolved row per value (the partial unique
-- index): a later write to the same customer finds the row there and raises nothing.
-- resolvedAt is set when support detaches the value; the same value may then become a
-- hub again, and gets a new row.
--
--   contactId         the oldest row of the customer that carried the value when found
--   primaryContactId  that customer's primary when found
--   partners          distinct values of the other kind on the value's rows when found
CREATE TABLE IF NOT EXISTS suspected_hub (
    id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL,
    value            varchar(255) NOT NULL,
    contactId        integer NOT NULL REFERENCES contact (id),
    primaryContactId integer NOT NULL REFERENCES contact (id),
    partners         integer NOT NULL,
    requestId        text,
    since            timestamptz NOT NULL DEFAULT clock_timestamp(),
    resolvedAt       timestamptz,

    CONSTRAINT suspected_hub_kind_valid CHECK (kind IN ('email', 'phoneNumber'))
);

CREATE UNIQUE INDEX IF NOT EXISTS suspected_hub_unresolved
    ON suspected_hub (kind, value) WHERE resolvedAt IS NULL;

-- hub_suspected history events: contact_id is the hub's row, primary_id its customer's
-- primary, value_kind the kind of value ('email' or 'phoneNumber'). Never the value: the
-- email and phoneNumber columns stay null.
ALTER TABLE contact_event ADD COLUMN IF NOT EXISTS valueKind text;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'contact_event_value_kind_valid')
    THEN
        ALTER TABLE contact_event ADD CONSTRAINT contact_event_value_kind_valid
            CHECK (valueKind IN ('email', 'phoneNumber'));
    END IF;
    IF NOT EXISTS (
        SELECT FROM pg_constraint
         WHERE conname = 'contact_event_kind_valid'
           AND pg_get_constraintdef(oid) LIKE '%hub_suspected%'
    ) THEN
        ALTER TABLE contact_event DROP CONSTRAINT IF EXISTS contact_event_kind_valid;
        ALTER TABLE contact_event ADD CONSTRAINT contact_event_kind_valid CHECK (
            kind IN ('customer_created', 'secondary_added', 'primary_demoted', 'rows_repointed',
                     'customer_split', 'value_detached', 'customer_erased', 'hub_suspected'));
    END IF;
END
$$;
