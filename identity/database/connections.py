"""Connections: one pool per app, one connection per request, one deadline per request.

The pool is created on first use, so the service starts while the database is down and
recovers by itself when it comes back. Connections run in autocommit mode: a read-only
request is one statement and one round trip; writes open their transaction explicitly
(repository.begin_locked). A broken connection is discarded, never handed out again; a
connection goes back to the pool only outside any transaction.

Every request has one deadline (REQUEST_DEADLINE_S) for everything it does with the
database: waiting for a pooled connection, connecting, lock waits, statements, retries.
The pool's watchdog enforces it on the client side (identity/database/pool.py); on the server side
each attempt's statement_timeout and lock_timeout end it a safety margin before the
deadline, so that the database's own answer ("lock timeout") arrives in time to say why.
"""

import math
import random
import threading
import time

import psycopg2
from flask import Flask, current_app, g
from psycopg2 import errors, extensions

from .pool import ConnectTimeout, NoFreeConnection, Pool, ServiceConnection

# Conflicts between concurrent writers that PostgreSQL resolves by aborting one of them.
# The unit is retried from its start, never a single statement.
_CONFLICTS = (errors.SerializationFailure, errors.DeadlockDetected, errors.LockNotAvailable)

# Session settings of one attempt, sent only when the remaining budget calls for other
# values than the connection has (late retries) or a late retry left them tightened.
SET_ATTEMPT_TIMEOUTS = """
SELECT set_config('statement_timeout', %(statement_ms)s, false),
       set_config('lock_timeout', %(lock_ms)s, false)
"""


class DatabaseUnavailable(Exception):
    """The database could not serve the request within its deadline (HTTP 503).

    `reason` says what happened, for the log; it never carries request data."""

    code = "database_unavailable"
    message = "the database is unavailable; retry shortly"

    def __init__(self, reason: str = ""):
        super().__init__(reason)
        self.reason = reason


class DatabaseUnreachable(DatabaseUnavailable):
    """Connecting failed: refused, reset, unknown host, authentication."""

    code = "database_unreachable"
    message = "the database cannot be reached; retry shortly"


class DatabaseNotAnswering(DatabaseUnavailable):
    """No answer within the request's deadline: connecting, a free connection, a statement."""

    code = "database_not_answering"
    message = "the database did not answer in time; retry shortly"


class LockTimeout(DatabaseUnavailable):
    """The write could not get its locks within the request's deadline."""

    code = "lock_timeout"
    message = "the write could not get its locks in time (another writer holds them); retry shortly"


class SchemaMissing(DatabaseUnavailable):
    """The database answers but has no contact table: `make db-init` has not run."""

    code = "schema_missing"
    message = "the database has no contact table: run make db-init"


class RetryTransaction(Exception):
    """Raised by a unit of work that must be rolled back and run again."""


def connect_timeout_s(deadline_s: float) -> int:
    """libpq's connect_timeout for a deadline: whole seconds, and at least 2 (it counts 1
    as 2). The deliverer and the import connect with it too."""
    return max(2, math.ceil(deadline_s))


def safety_margin_s(deadline_s: float) -> float:
    """How long before the deadline the server-side timeouts end an attempt: a fifth of
    the deadline, between 0.1 and 1 s, for the database's answer to travel back."""
    return min(1.0, max(0.1, deadline_s / 5))


def _session_timeouts(config, remaining_s: float) -> tuple[int, int]:
    """statement_timeout and lock_timeout (ms) for an attempt with remaining_s left.

    A lock wait ends a whole margin before the deadline, a statement half a margin
    before it: a statement stuck on a lock is reported as the lock timeout it is."""
    margin_s = safety_margin_s(config["REQUEST_DEADLINE_S"])
    statement_ms = int((remaining_s - margin_s / 2) * 1000)
    lock_ms = int((remaining_s - margin_s) * 1000)
    return (
        max(1, min(config["STATEMENT_TIMEOUT_MS"], statement_ms)),
        max(1, min(config["LOCK_TIMEOUT_MS"], lock_ms)),
    )


def connection_parameters(config) -> dict:
    """libpq parameters of every service connection."""
    deadline_s = config["REQUEST_DEADLINE_S"]
    statement_ms, lock_ms = _session_timeouts(config, deadline_s)
    settings = {
        "statement_timeout": statement_ms,
        "lock_timeout": lock_ms,
        # A transaction of ours idle this long belongs to a frozen or cut-off process:
        # end it, so that its locks do not stall every other writer.
        "idle_in_transaction_session_timeout": math.ceil(deadline_s * 1000),
        # The customer query is cheap per row but the planner's cost for a customer of
        # thousands of rows passes jit_above_cost: compiling it took 170 ms per request,
        # with the write's locks held. Nothing this service runs gains from JIT.
        "jit": "off",
        # Prepared statements are parsed once but planned at every execution with the
        # actual values. A generic plan cached while the table was young keeps scanning
        # every row as the table grows, until the next ANALYZE (measured: 10 ms per
        # look-up at 7,500 rows instead of 0.1 ms).
        "plan_cache_mode": "force_custom_plan",
    }
    return {
        "options": " ".join(f"-c {name}={value}" for name, value in settings.items()),
        "application_name": "identity",
        # libpq's own bound on a connection attempt; the request stops waiting at its
        # deadline, this frees the connecting thread.
        "connect_timeout": connect_timeout_s(deadline_s),
        # A peer that vanished (a host down, a dropped network path) is noticed on an idle
        # pooled connection by keepalives, and on a busy one by tcp_user_timeout.
        "keepalives": 1,
        "keepalives_idle": max(1, math.ceil(deadline_s)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": math.ceil(deadline_s * 1000),
    }


_pool_lock = threading.Lock()


def pool_of(app: Flask) -> Pool:
    """The app's pool, created on first use."""
    pool = app.extensions.get("identity_pool")
    if pool is None:
        with _pool_lock:  # creates an object only: connecting happens later, unlocked
            pool = app.extensions.get("identity_pool")
            if pool is None:
                pool = _create_pool(app.config, app.extensions["identity_metrics"])
                app.extensions["identity_pool"] = pool
    return pool


def _create_pool(config, metrics) -> Pool:
    if not config["DATABASE_URL"]:
        raise DatabaseUnreachable("DATABASE_URL is not set")
    dsn = extensions.make_dsn(config["DATABASE_URL"], **connection_parameters(config))
    timeouts = _session_timeouts(config, config["REQUEST_DEADLINE_S"])

    def connect() -> ServiceConnection:
        conn = ServiceConnection(dsn)
        conn.timeouts = timeouts
        return conn

    return Pool(connect, config["POOL_SIZE"], metrics.pool_waiting)


def request_deadline() -> float:
    """When this request's database work must be over (time.monotonic())."""
    if "db_deadline" not in g:
        g.db_deadline = time.monotonic() + current_app.config["REQUEST_DEADLINE_S"]
    return g.db_deadline


def _start_deadline() -> None:
    request_deadline()


def get_db():
    """The request's connection, taken from the pool on first use."""
    if "db" not in g:
        try:
            conn = pool_of(current_app).checkout(request_deadline())
        except NoFreeConnection:
            raise DatabaseNotAnswering("no free pooled connection before the deadline") from None
        except ConnectTimeout:
            raise DatabaseNotAnswering("connecting did not finish before the deadline") from None
        except (psycopg2.Error, OSError) as error:
            raise DatabaseUnreachable(f"connecting failed: {type(error).__name__}") from None
        current_app.extensions["identity_metrics"].connections_in_use.inc()
        g.db = conn
        if not conn.statements_prepared:
            _prepare(conn)
    return g.db


def _prepare(conn) -> None:
    """Runs the statements' preparation that create_app registered (init_app)."""
    try:
        current_app.extensions["identity_prepare_statements"](conn)
    except errors.UndefinedTable:
        raise SchemaMissing("no contact table") from None
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
        _discard_db()
        raise _failure(conn, error, "preparing statements") from None
    conn.statements_prepared = True


def _failure(conn, error: Exception, doing: str) -> DatabaseUnavailable:
    """The 503 for a statement that failed without an answer we can retry."""
    if conn.cut_by_watchdog or isinstance(error, errors.QueryCanceled):
        return DatabaseNotAnswering(f"no answer before the deadline while {doing}")
    return DatabaseUnreachable(f"connection lost while {doing}")


def release_db(_exception=None) -> None:
    """Teardown: hand the connection back, clean, or throw it away if it is broken."""
    conn = g.pop("db", None)
    if conn is None:
        return
    if not conn.closed and conn.info.transaction_status != extensions.TRANSACTION_STATUS_IDLE:
        try:
            conn.cursor().execute("ROLLBACK")
        except psycopg2.Error:
            pass
    broken = conn.closed or conn.info.transaction_status != extensions.TRANSACTION_STATUS_IDLE
    _give_back(conn, broken=bool(broken))


def _discard_db() -> None:
    conn = g.pop("db", None)
    if conn is not None:
        _give_back(conn, broken=True)


def _give_back(conn, broken: bool) -> None:
    current_app.extensions["identity_pool"].give_back(conn, broken)
    current_app.extensions["identity_metrics"].connections_in_use.dec()


def _rollback_quietly(conn) -> None:
    try:
        conn.cursor().execute("ROLLBACK")
    except psycopg2.Error:
        _discard_db()


def _fit_timeouts(conn, remaining_s: float) -> None:
    """Make the attempt's statements and lock waits end in time on the server's clock.

    One extra round trip, only when the wanted values differ from the connection's by
    more than a quarter of the safety margin: a late retry, or the first request after
    one."""
    config = current_app.config
    wanted = _session_timeouts(config, remaining_s)
    tolerance_ms = safety_margin_s(config["REQUEST_DEADLINE_S"]) * 1000 / 4
    if all(
        abs(have - want) <= tolerance_ms for have, want in zip(conn.timeouts, wanted, strict=True)
    ):
        return
    with conn.cursor() as cur:
        settings = {"statement_ms": str(wanted[0]), "lock_ms": str(wanted[1])}
        cur.execute(SET_ATTEMPT_TIMEOUTS, settings)
    conn.timeouts = wanted


def run_unit(work):
    """Run work(conn) to completion within the request's deadline, retrying it whole.

    Conflicts (serialization failure, deadlock, lock timeout, RetryTransaction) are
    retried after a short random pause, up to RETRY_BUDGET times. A connection that the
    database dropped (a restart, say) is replaced and the unit run again: every unit of
    this service may safely run twice, since a repeated checkout changes nothing. When
    the deadline comes first, the 503 says why: locks (after conflicts), no answer, or
    no connection.
    """
    config = current_app.config
    expires = request_deadline()
    margin_s = safety_margin_s(config["REQUEST_DEADLINE_S"])
    conflicts = 0
    for attempt in range(config["RETRY_BUDGET"] + 1):
        conn = get_db()
        remaining_s = expires - time.monotonic()
        if remaining_s <= margin_s:
            break
        try:
            _fit_timeouts(conn, remaining_s)
            return work(conn)
        except (*_CONFLICTS, RetryTransaction) as conflict:
            conflicts += 1
            _rollback_quietly(conn)
            current_app.extensions["identity_metrics"].retries.labels(type(conflict).__name__).inc()
            time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
            if conn.cut_by_watchdog or not conn.closed:  # too late, or a statement timeout
                failure = _failure(conn, error, "running a statement")
                _discard_db()
                raise failure from None
            _discard_db()  # dropped by the server: run again on a new connection
    if conflicts:
        raise LockTimeout(f"{conflicts} conflicting attempts, none finished before the deadline")
    raise DatabaseNotAnswering("no time left for another attempt")


def close_pool(app: Flask) -> None:
    pool = app.extensions.pop("identity_pool", None)
    if pool is not None:
        pool.close()


def init_app(app: Flask, prepare_statements) -> None:
    """prepare_statements(conn) runs once on every new connection, before its first use."""
    app.extensions["identity_prepare_statements"] = prepare_statements
    app.before_request(_start_deadline)
    app.teardown_appcontext(release_db)
