-- The change feed (GET /events) and the webhook deliverers' cursors. Every statement is
-- idempotent: `make db-init` may run this file any number of times.
--
-- The feed is read from the merge history, contact_event. Its order is (txid, id): txid
-- is the id of the transaction that wrote the event, so a reader can serve only events
-- whose transaction lies below the oldest transaction still running; nothing can then
-- commit behind a cursor it handed out (see docs/feed.md). The default fills the column
-- without a change to the writers: the transaction already has its id when it writes an
-- event, because it has just written the contact row the event describes. Events that
-- exist when this file first runs all get this migration's transaction id, which keeps
-- them in id order among themselves and ahead of every later event.
ALTER TABLE contact_event
    ADD COLUMN IF NOT EXISTS txid xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE INDEX IF NOT EXISTS contact_event_feed_order ON contact_event (txid, id);

-- One row per webhook subscriber (WEBHOOK_SUBSCRIBER): where its deliverer stands in the
-- feed, and the counters /metrics reports. Only the deliverer holding the subscriber's
-- advisory lock writes its row.
CREATE TABLE IF NOT EXISTS webhook_subscriber (
    id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    -- The feed position of the last event the subscriber acknowledged with a 2xx.
    cursorTxid       xid8 NOT NULL DEFAULT '0',
    cursorEventId    bigint NOT NULL DEFAULT 0,
    deliveredEvents  bigint NOT NULL DEFAULT 0,
    failedAttempts   bigint NOT NULL DEFAULT 0,
    lastDeliveredAt  timestamptz,
    lastFailedAt     timestamptz
);
