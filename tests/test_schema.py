"""SPEC §2: the table, its constraints and indexes."""

import contextlib

import psycopg2
import pytest
from conftest import identify, rows

from identity.customers.repository import SELECT_INSERTED_CONTACT
from identity.database import transaction
from identity.database.connections import run_unit


def test_columns_are_the_specified_ones(db):
    with db.cursor() as cur:
        cur.execute(
            """SELECT column_name, data_type, is_nullable FROM information_schema.columns
                WHERE table_name = 'contact' ORDER BY ordinal_position"""
        )
        assert cur.fetchall() == [
            ("id", "integer", "NO"),
            ("phonenumber", "character varying", "YES"),
            ("email", "character varying", "YES"),
            ("linkedid", "integer", "YES"),
            ("linkprecedence", "text", "NO"),
            ("createdat", "timestamp with time zone", "NO"),
            ("updatedat", "timestamp with time zone", "NO"),
            ("deletedat", "timestamp with time zone", "YES"),
        ]


@pytest.mark.parametrize(
    "values",
    [
        "('a@x.io', 'primary', 1)",  # a primary that links somewhere
        "('a@x.io', 'secondary', NULL)",  # a secondary that links nowhere
        "('a@x.io', 'tertiary', NULL)",
        "(NULL, 'primary', NULL)",  # no identifier at all
        "('a@x.io', 'secondary', 999)",  # dangling link
    ],
)
def test_constraints_reject_malformed_rows(db, values):
    with db.cursor() as cur:
        cur.execute("INSERT INTO contact (email, linkPrecedence) VALUES ('p@x.io', 'primary')")
        with pytest.raises(psycopg2.IntegrityError):
            cur.execute(f"INSERT INTO contact (email, linkPrecedence, linkedId) VALUES {values}")
    assert len(rows(db)) == 1


def test_updated_at_is_set_on_every_update(db):
    with db.cursor() as cur:
        cur.execute(
            """INSERT INTO contact (email, linkPrecedence, createdAt, updatedAt)
               VALUES ('a@x.io', 'primary', '2020-01-01', '2020-01-01')"""
        )
        cur.execute("UPDATE contact SET phoneNumber = '1'")
        cur.execute("SELECT updatedAt > now() - interval '1 minute' FROM contact")
        assert cur.fetchone() == (True,)


@contextlib.contextmanager
def customer_rows_body_prepared(cur):
    """The query of customer_rows's body as the prepared statement customer_rows_body,
    with the function's argument types: what the function plans, to EXPLAIN."""
    cur.execute("SELECT prosrc FROM pg_proc WHERE proname = 'customer_rows'")
    query = cur.fetchone()[0].split("RETURN QUERY", 1)[1].rsplit(";", 1)[0]
    for number, argument in enumerate(
        ("wanted_email", "wanted_phone_number", "wanted_contact_id"), start=1
    ):
        query = query.replace(argument, f"${number}")
    cur.execute("PREPARE customer_rows_body(text, text, integer) AS " + query)
    try:
        yield
    finally:
        cur.execute("DEALLOCATE customer_rows_body")


def _plan_of_customer_rows(cur) -> str:
    """The plan customer_rows keeps for a session: a generic plan, as it forces."""
    cur.execute("SET plan_cache_mode = force_generic_plan")
    with customer_rows_body_prepared(cur):
        cur.execute("EXPLAIN EXECUTE customer_rows_body('user7@x.io', '7', NULL)")
        plan = "\n".join(line for (line,) in cur.fetchall())
    cur.execute("RESET plan_cache_mode")
    return plan


def test_every_lookup_of_the_resolve_query_is_an_index_scan(db):
    with db.cursor() as cur:
        cur.execute(
            """INSERT INTO contact (email, phoneNumber, linkPrecedence)
               SELECT 'user' || n || '@x.io', n::text, 'primary' FROM generate_series(1, 20000) n"""
        )
        cur.execute("ANALYZE contact")
        plan = _plan_of_customer_rows(cur)
    assert "Seq Scan" not in plan, plan
    for index in (
        "contact_email_live",
        "contact_phone_number_live",
        "contact_linked_id_live",
        "contact_pkey",
    ):
        assert index in plan, plan


def test_the_resolve_query_is_planned_once_per_session(db):
    """The function keeps one generic plan for the session: no plan at every call."""
    with db.cursor() as cur:
        cur.execute("SELECT proconfig FROM pg_proc WHERE proname = 'customer_rows'")
        assert cur.fetchone()[0] == ["plan_cache_mode=force_generic_plan"]


def test_the_look_up_changes_no_setting_of_its_caller(db):
    """On a tiny table the function plans each call for itself by changing
    plan_cache_mode: for its call only, not for the rest of the caller's transaction."""
    with db.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT current_setting('plan_cache_mode')")
        before = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM customer_rows('a@x.io', NULL, NULL)")
        cur.execute(
            "SELECT relpages < 50, current_setting('plan_cache_mode') FROM pg_class"
            " WHERE relname = 'contact'"
        )
        tiny, after = cur.fetchone()
        cur.execute("ROLLBACK")
    assert tiny and before == after == "auto"


def _scans_of_contact(cur, email: str) -> tuple[int, int]:
    """(sequential, index) scans of contact by one customer_rows call: the difference it
    makes to pg_stat_xact_user_tables, which counts what the session has not yet
    reported, the current transaction included."""
    counted = "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'contact'"
    cur.execute("BEGIN")
    cur.execute(counted)
    before = cur.fetchone()
    cur.execute("SELECT count(*) FROM customer_rows(%s, NULL, NULL)", (email,))
    cur.execute(counted)
    after = cur.fetchone()
    cur.execute("ROLLBACK")
    return after[0] - before[0], after[1] - before[1]


def test_a_plan_from_a_tiny_table_is_not_kept_when_it_grows(db):
    """A session that looked customers up while the table was tiny (statistics of one
    page) still looks them up by index once the table has grown, before any new ANALYZE:
    a plan kept from the tiny table would scan it whole."""
    insert = """INSERT INTO contact (email, phoneNumber, linkPrecedence)
                SELECT 'user' || n || '@x.io', n::text, 'primary'
                  FROM generate_series(%s, %s) n"""
    with db.cursor() as cur:
        cur.execute(insert, (1, 100))
        cur.execute("ANALYZE contact")
        _scans_of_contact(cur, "user7@x.io")  # this session's first call: it plans
        cur.execute(insert, (101, 20000))
        sequential, by_index = _scans_of_contact(cur, "user7@x.io")
    assert sequential == 0 and by_index > 0


def test_reading_back_the_inserted_row_is_an_index_scan(db):
    with db.cursor() as cur:
        cur.execute(
            """INSERT INTO contact (email, linkPrecedence)
               SELECT 'user' || n || '@x.io', 'primary' FROM generate_series(1, 20000) n"""
        )
        cur.execute("ANALYZE contact")
        cur.execute("EXPLAIN " + SELECT_INSERTED_CONTACT)
        plan = "\n".join(line for (line,) in cur.fetchall())
    assert "Seq Scan" not in plan and "contact_pkey" in plan, plan


def test_service_transactions_never_jit_compile(app, db):
    """JIT compiled the customer query at every request on a stock PostgreSQL (170 ms for
    a customer of 1,000 rows). The embedded server is built without JIT, so the setting
    is checked in a service transaction, and the plan wherever the server has JIT. The
    setting is the transaction's own: the session keeps the server's default."""
    identify(app.test_client(), {"email": "a@x.io", "phoneNumber": "1"})

    def jit_and_plan(conn):
        with conn.cursor() as cur:
            transaction.begin(cur, "SHOW jit")
            jit = cur.fetchone()[0]
            # Make every plan costly enough for JIT, as a large customer's is.
            cur.execute("SET LOCAL jit_above_cost = 0")
            with customer_rows_body_prepared(cur):
                cur.execute(
                    "EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON)"
                    " EXECUTE customer_rows_body('a@x.io', '1', NULL)"
                )
                plan = cur.fetchone()[0][0]
            transaction.rollback(cur)
            cur.execute("SHOW jit")
            return jit, plan, cur.fetchone()[0]

    with app.test_request_context():
        jit, plan, session_jit = run_unit(jit_and_plan)
    assert jit == "off" and "JIT" not in plan, plan
    with db.cursor() as cur:
        cur.execute("SHOW jit")
        assert session_jit == cur.fetchone()[0]
