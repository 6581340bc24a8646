"""Connections: one pool per app, one connection per request, one deadline per request.

The pool is created on first use, so the service starts while the database is down and
recovers by itself when it comes back. Connections run in autocommit mode and carry no
session state, so PgBouncer in transaction mode may sit in between: a read-only request
is one round trip; writes open their transaction explicitly, always through
identity/database/transaction.py. A broken connection is discarded, never handed out
again; a connection goes back to the pool only outside any transaction.

Every request has one deadline (REQUEST_DEADLINE_S) for everything it does with the
database: waiting for a pooled connection, connecting, lock waits, statements, retries.
The pool's watchdog enforces it on the client side (identity/database/pool.py); on the
server side each attempt's statement_timeout and lock_timeout, set for its transaction
only, end it a safety margin before the deadline, so that the database's own answer
("lock timeout") arrives in time to say why.
"""

import math
import re
import threading
import time

import psycopg2
from flask import Flask, current_app, g
from psycopg2 import errors, extensions

from . import transaction
from .pool import ConnectTimeout, NoFreeConnection, Pool, ServiceConnection
from .transaction import ConnectionLost, GaveUp, Limits

# A node that cannot take our writes: a standby (a connection that landed on one, or a
# node demoted under it) or a server starting up, as during a failover. The connection is
# thrown away and the request answered 503 with Retry-After at once: a new connection, on
# the next request, finds the node that now accepts writes (libpq's
# target_session_attrs=read-write picks it among several hosts).
WRONG_NODE = (errors.ReadOnlySqlTransaction, errors.CannotConnectNow)

# The server ended the connection (shutting down, crashed, or the backend terminated):
# the connection is thrown away and the unit runs again on a new one while the deadline
# allows; if none can be made, the request gets its 503.
SERVER_ENDED = (errors.AdminShutdown, errors.CrashShutdown)


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


class DatabaseSwitching(DatabaseUnavailable):
    """The connection is on a node that cannot take writes now: a standby, or a server
    shutting down or starting up (a failover in progress)."""

    code = "database_switching"
    message = "the database is switching over to another server; retry shortly"


def connect_timeout_s(deadline_s: float) -> int:
    """libpq's connect_timeout for a deadline: whole seconds, and at least 2 (it counts 1
    as 2). The deliverer and the import connect with it too."""
    return max(2, math.ceil(deadline_s))


def safety_margin_s(deadline_s: float) -> float:
    """How long before the deadline the server-side timeouts end an attempt: a fifth of
    the deadline, between 0.1 and 1 s, for the database's answer to travel back."""
    return min(1.0, max(0.1, deadline_s / 5))


def attempt_limits(config, remaining_s: float) -> Limits:
    """statement_timeout and lock_timeout for an attempt with remaining_s left.

    A lock wait ends a whole margin before the deadline, a statement half a margin
    before it: a statement stuck on a lock is reported as the lock timeout it is."""
    margin_s = safety_margin_s(config["REQUEST_DEADLINE_S"])
    statement_ms = int((remaining_s - margin_s / 2) * 1000)
    lock_ms = int((remaining_s - margin_s) * 1000)
    return Limits(
        statement_ms=max(1, min(config["STATEMENT_TIMEOUT_MS"], statement_ms)),
        lock_ms=max(1, min(config["LOCK_TIMEOUT_MS"], lock_ms)),
        idle_ms=math.ceil(config["REQUEST_DEADLINE_S"] * 1000),
    )


def keepalive_parameters(deadline_s: float) -> dict:
    """libpq parameters (never startup options, which poolers refuse) of every
    long-lived connection: the service's pool, the deliverer's, the import's. A peer that
    vanished (a host down, a dropped network path, a failover) is noticed on an idle
    connection by keepalives, and on a busy one by tcp_user_timeout, within about
    deadline_s + 3 s instead of the kernel's 2 hours or 15 minutes."""
    return {
        "keepalives": 1,
        "keepalives_idle": max(1, math.ceil(deadline_s)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": math.ceil(deadline_s * 1000),
    }


def connection_parameters(config) -> dict:
    """libpq parameters of every service connection. No `options`: what the service
    needs of the server is set per transaction (identity/database/transaction.py)."""
    deadline_s = config["REQUEST_DEADLINE_S"]
    return {
        "application_name": "identity",
        # libpq's own bound on a connection attempt; the request stops waiting at its
        # deadline, this frees the connecting thread.
        "connect_timeout": connect_timeout_s(deadline_s),
        **keepalive_parameters(deadline_s),
    }


def connect(config, application_name: str, limits: Limits) -> transaction.Connection:
    """A connection of its own for a long-lived process (the deliverer, the import), with
    the service's keepalives; limits apply to each of its transactions."""
    deadline_s = config["REQUEST_DEADLINE_S"]
    conn = psycopg2.connect(
        config["DATABASE_URL"],
        connection_factory=transaction.Connection,
        application_name=application_name,
        connect_timeout=connect_timeout_s(deadline_s),
        **keepalive_parameters(deadline_s),
    )
    conn.autocommit = True  # transactions are opened explicitly (transaction.begin)
    conn.limits = limits
    return conn


def failure_reason(error: Exception) -> str:
    """Why a connection failed, for the log: libpq's words on one line (refused, timeout,
    authentication, "could not make a writable connection", "server closed the
    connection", ...), without the user and database names they may quote. libpq never
    quotes a password, and connection errors never carry request data; but a URL it
    cannot read is quoted in pieces, which may be the password: then nothing quoted is
    kept."""
    text = " ".join(str(error).split())
    text = re.sub(r'(user|database|role) "[^"]*"', r'\1 "…"', text)
    if "invalid" in text or "missing" in text:
        text = re.sub(r'"[^"]*"', '"…"', text)
    return f"{type(error).__name__}: {text[:300]}"


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
    return Pool(lambda: ServiceConnection(dsn), config["POOL_SIZE"], metrics.pool_waiting)


def request_deadline() -> float:
    """When this request's database work must be over (time.monotonic())."""
    deadline = g.get("db_deadline")
    if deadline is None:
        deadline = g.db_deadline = time.monotonic() + current_app.config["REQUEST_DEADLINE_S"]
    return deadline


def _start_deadline() -> None:
    request_deadline()


def get_db():
    """The request's connection, taken from the pool on first use."""
    if "db" not in g:
        try:
            conn = _checkout(pool_of(current_app), request_deadline())
        except NoFreeConnection:
            raise DatabaseNotAnswering("no free pooled connection before the deadline") from None
        except ConnectTimeout:
            raise DatabaseNotAnswering("connecting did not finish before the deadline") from None
        except (psycopg2.Error, OSError) as error:
            raise DatabaseUnreachable(f"connecting failed: {failure_reason(error)}") from None
        current_app.extensions["identity_metrics"].connections_in_use.inc()
        g.db = conn
        if conn.info.parameter_status("in_hot_standby") == "on":
            _discard_db()
            raise DatabaseSwitching("the connection is on a standby (in_hot_standby)")
    return g.db


def _checkout(pool: Pool, expires: float) -> ServiceConnection:
    """A connection from the pool, asked for twice if opening it failed: a backend can be
    ended while it starts (pg_terminate_backend on the service's connections, a restart),
    which libpq reports as a failed connect. A second failure is the answer."""
    try:
        return pool.checkout(expires)
    except psycopg2.OperationalError:
        if time.monotonic() >= expires:
            raise
        return pool.checkout(expires)


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
    if not conn.closed and transaction.in_transaction(conn):
        try:
            transaction.rollback(conn.cursor())
        except psycopg2.Error:
            pass
    broken = conn.closed or transaction.in_transaction(conn)
    _give_back(conn, broken=bool(broken))


def _discard_db() -> None:
    conn = g.pop("db", None)
    if conn is not None:
        _give_back(conn, broken=True)


def _give_back(conn, broken: bool) -> None:
    current_app.extensions["identity_pool"].give_back(conn, broken)
    current_app.extensions["identity_metrics"].connections_in_use.dec()


def _rollback_quietly() -> None:
    conn = g.get("db")
    if conn is None:
        return
    try:
        transaction.rollback(conn.cursor())
    except psycopg2.Error:
        _discard_db()


def run_unit(work):
    """Run work(conn) to completion within the request's deadline, retrying it whole
    (transaction.run: the one retry policy).

    Conflicts (serialization failure, deadlock, lock timeout, RetryTransaction) are
    retried after a short random pause, up to RETRY_BUDGET times. A connection that the
    database dropped (a restart, say) is replaced and the unit run again: every unit of
    this service may safely run twice, even after a COMMIT whose answer was lost
    (transaction.py says why). A connection on a node that cannot take writes (a standby:
    WRONG_NODE) is thrown away and the request answered 503.
    When the deadline comes first, the 503 says why: locks (after conflicts), no answer,
    or no connection. Each attempt's limits come from the time it has left.
    """
    config = current_app.config
    expires = request_deadline()
    margin_s = safety_margin_s(config["REQUEST_DEADLINE_S"])
    retries = current_app.extensions["identity_metrics"].retries

    def attempt():
        conn = get_db()
        conn.limits = attempt_limits(config, expires - time.monotonic())
        try:
            return work(conn)
        except transaction.RETRYABLE:
            raise  # lock timeouts are OperationalErrors too: the policy retries them
        except WRONG_NODE as error:
            _discard_db()
            raise DatabaseSwitching(f"{type(error).__name__} while running a statement") from None
        except errors.UndefinedTable:
            raise SchemaMissing("no contact table") from None
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
            ended = conn.closed or isinstance(error, SERVER_ENDED)
            if conn.cut_by_watchdog or not ended:  # too late, or a statement timeout
                failure = _failure(conn, error, "running a statement")
                _discard_db()
                raise failure from None
            _discard_db()  # dropped by the server: run again on a new connection
            raise ConnectionLost() from None

    try:
        return transaction.run(
            attempt,
            budget=config["RETRY_BUDGET"],
            rollback=_rollback_quietly,
            pause_cap_s=0.1,
            time_left=lambda: expires - time.monotonic() > margin_s,
            on_conflict=lambda conflict: retries.labels(type(conflict).__name__).inc(),
        )
    except GaveUp as gave_up:
        if gave_up.conflicts:
            raise LockTimeout(
                f"{gave_up.conflicts} conflicting attempts, none finished before the deadline"
            ) from None
        raise DatabaseNotAnswering("no time left for another attempt") from None


def close_pool(app: Flask) -> None:
    pool = app.extensions.pop("identity_pool", None)
    if pool is not None:
        pool.close()


def init_app(app: Flask) -> None:
    app.before_request(_start_deadline)
    app.teardown_appcontext(release_db)
