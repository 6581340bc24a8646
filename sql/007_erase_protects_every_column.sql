-- Erasure (SPEC §9) may null the e-mail and phone number of history events and change
-- nothing else. 004 compared a hand-written list of columns, written before 003 added
-- txid (the feed's order) and 006 added valueKind: an "erasing" UPDATE could change
-- those. Compare whole rows instead, minus the two erased columns, so a column added
-- later is protected without another edit. Idempotent: CREATE OR REPLACE; the trigger
-- of 004 already calls this function.
CREATE OR REPLACE FUNCTION contact_event_erase_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('identity.erasing', true) = 'on'
       AND NEW.email IS NULL AND NEW.phoneNumber IS NULL
       AND to_jsonb(NEW) - 'email' - 'phonenumber' = to_jsonb(OLD) - 'email' - 'phonenumber'
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'contact_event is append-only';
END
$$;
