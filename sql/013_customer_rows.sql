-- customer_rows: the one query that resolves a whole linked customer (SPEC §5), as a
-- PL/pgSQL function so that PostgreSQL plans it once per server session instead of at
-- every call. Planning the recursive CTE cost more than running it (0.27 ms against
-- 0.10 ms a call, pg_stat_statements at concurrency 16), and the service sent it as
-- plain text: every checkout paid for the plan. PL/pgSQL keeps the plan of its query for
-- the session; plan_cache_mode = force_generic_plan makes that one plan for every
-- argument, also for an absent e-mail or phone number, which a custom plan would fold
-- away. Nothing is prepared by the client: a pooler in transaction mode (PgBouncer) may
-- hand the server session to anyone, and the cached plan goes with the session, not with
-- a client. Idempotent: may run again.
--
-- A kept plan is only as good as the statistics it was made from. Made from the
-- statistics of a tiny table (or none: a table never analyzed), it scans the whole table,
-- and it stays until the next ANALYZE replaces it (autovacuum's, a minute or more later,
-- or never where autovacuum is off): on a fresh database filling at checkout speed,
-- look-ups took 4-12 ms instead of 0.2 ms, and the service served about a quarter of
-- its usual rate. From statistics of 20 pages (2,000 rows) on, the plan is index
-- look-ups only, and it stayed right when the table then grew a hundredfold. So while
-- the statistics describe fewer than 50 pages, each call is planned for itself, from
-- the table's real size, as a query sent as text would be; after that, the kept plan
-- serves.
--
-- Arguments: the request's e-mail and phone number, or a row's id; an absent one is NULL
-- and matches nothing (`= NULL` is never true).
--
-- The result: every live row of the stored groups that the rows in `matched` belong to,
-- in no particular order (the caller sorts): SPEC §5's set C, or more when orphans are
-- involved (identity/customers/reconcile.py and linking.py decide which of these rows
-- form the customer).
--
--   matched    M of SPEC §5: the live rows with the e-mail or the phone number (or the
--              row with the id); partial-index scans.
--   ancestry   Walks linkedId upwards from every matched row through live rows. Invariant
--              §6.1 keeps every walk to one step; UNION (not UNION ALL) drops repeats, so
--              the walk ends even on data that breaks the invariant. The parent is fetched
--              in a LATERAL subquery with LIMIT 1, which the planner cannot turn into a
--              hash join: always a primary-key look-up, even while the table's statistics
--              are stale (a young, fast-growing table).
--   roots      Where the walks lead: a live primary, or the id of a soft-deleted primary
--              whose live secondaries are orphans (SPEC §2).
--   groups     Each root and every live row that links to it: an index look-up each, by
--              id and by linkedId, in a LATERAL subquery so that the planner cannot choose
--              a hash join over the whole table. DISTINCT drops the repeats that a chain
--              (data breaking §6.1) would bring.
--
-- The result's columns share the table's names; `#variable_conflict use_column` makes
-- every unqualified name in the query mean the table's column, never the result's.
CREATE OR REPLACE FUNCTION customer_rows(
    wanted_email text, wanted_phone_number text, wanted_contact_id integer
) RETURNS TABLE (
    id integer,
    email varchar,
    phoneNumber varchar,
    linkedId integer,
    linkPrecedence text,
    createdAt timestamptz
)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $function$
#variable_conflict use_column
BEGIN
    IF (SELECT relpages < 50 FROM pg_class WHERE oid = 'contact'::regclass) THEN
        -- For this call only: the function's SET clause restores the setting.
        PERFORM set_config('plan_cache_mode', 'force_custom_plan', true);
    END IF;
    RETURN QUERY
    WITH RECURSIVE
    matched AS (
        SELECT id, linkedId
          FROM contact
         WHERE deletedAt IS NULL
           AND (email = wanted_email
                OR phoneNumber = wanted_phone_number
                OR id = wanted_contact_id)
    ),
    ancestry (id, linkedId) AS (
        SELECT id, linkedId FROM matched
        UNION
        SELECT parent.id, parent.linkedId
          FROM ancestry
         CROSS JOIN LATERAL (
               SELECT id, linkedId FROM contact
                WHERE id = ancestry.linkedId AND deletedAt IS NULL
                LIMIT 1) AS parent
    ),
    roots AS (
        SELECT DISTINCT COALESCE(linkedId, id) AS id FROM ancestry
    ),
    groups AS (
        SELECT member.*
          FROM roots
         CROSS JOIN LATERAL (
               SELECT * FROM contact WHERE id = roots.id
               UNION ALL
               SELECT * FROM contact WHERE linkedId = roots.id AND deletedAt IS NULL) AS member
    )
    SELECT DISTINCT id, email, phoneNumber, linkedId, linkPrecedence, createdAt
      FROM groups
     WHERE deletedAt IS NULL;
END
$function$;
