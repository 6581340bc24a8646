-- The deliverer's exclusive right to its subscriber: a lease row with an expiry instead of
-- a session advisory lock, so that it holds through a transaction-mode connection pooler
-- (PgBouncer), where no session outlives a transaction. Idempotent: may run again.
--
--   leaseHolder     who delivers for the subscriber: host, process id and a random part,
--                   unique per deliverer run; NULL when nobody does
--   leaseExpiresAt  until when, on the database's clock; the holder renews it while it
--                   delivers, and another deliverer may take it over only after it passed
ALTER TABLE webhook_subscriber
    ADD COLUMN IF NOT EXISTS leaseHolder text,
    ADD COLUMN IF NOT EXISTS leaseExpiresAt timestamptz;
