-- Corrections are safe to run twice. A detach or an erase whose COMMIT went through but
-- whose answer was lost (a dropped connection, a failover) is run again by the service
-- with the same request id; finding its own events, it answers as the first run would
-- have, instead of 409 or 404 (identity/customers/corrections.py). The index is partial:
-- only the corrections' events are in it, so a checkout's inserts do not pay for it.
CREATE INDEX IF NOT EXISTS contact_event_correction_request
    ON contact_event (requestId)
    WHERE kind IN ('value_detached', 'customer_split', 'customer_erased');
