"""Connections: one pool per app, one connection per request, whole-unit retries.

The pool is created on first use, so the service starts while the database is down and
recovers by itself when it comes back. Connections run in autocommit mode: a read-only
request is one statement and one round trip; writes open their transaction explicitly
(repository.begin_locked). A broken connection is discarded, never handed out again; a
connection goes back to the pool only outside any transaction.
"""

import random
import threading
import time

import psycopg2
from psycopg2 import errors, extensions
from psycopg2.pool import PoolError, ThreadedConnectionPool
from flask import Flask, current_app, g

from . import repository

# Conflicts between concurrent writers that PostgreSQL resolves by aborting one of them.
# The unit is retried from its start, never a single statement.
_CONFLICTS = (errors.SerializationFailure, errors.DeadlockDetected, errors.LockNotAvailable)


class ServiceConnection(extensions.connection):
    """A connection in autocommit mode that knows whether its statements are prepared."""

    def __init__(self, dsn, *args, **kwargs):
        super().__init__(dsn, *args, **kwargs)
        self.autocommit = True
        self.statements_prepared = False


class DatabaseUnavailable(Exception):
    """The database cannot be reached or did not answer in time (HTTP 503)."""

    code = "database_unavailable"
    message = "the database is unavailable; retry shortly"


class SchemaMissing(DatabaseUnavailable):
    """The database answers but has no contact table: `make db-init` has not run."""

    code = "schema_missing"
    message = "the database has no contact table: run make db-init"


class RetryTransaction(Exception):
    """Raised by a unit of work that must be rolled back and run again."""


_pool_lock = threading.Lock()


def _pool(app: Flask) -> ThreadedConnectionPool:
    pool = app.extensions.get("identity_pool")
    if pool is None:
        with _pool_lock:
            pool = app.extensions.get("identity_pool")
            if pool is None:
                pool = _create_pool(app.config)
                app.extensions["identity_pool"] = pool
    return pool


def _create_pool(config) -> ThreadedConnectionPool:
    if not config["DATABASE_URL"]:
        raise DatabaseUnavailable("DATABASE_URL is not set")
    # plan_cache_mode: prepared statements are parsed once but planned at every execution
    # with the actual values. A generic plan cached while the table was young keeps
    # scanning every row as the table grows, until the next ANALYZE (measured: 10 ms per
    # look-up at 7,500 rows instead of 0.1 ms).
    options = (
        f"-c statement_timeout={config['STATEMENT_TIMEOUT_MS']} "
        f"-c lock_timeout={config['LOCK_TIMEOUT_MS']} "
        "-c plan_cache_mode=force_custom_plan"
    )
    # minconn = maxconn: psycopg2's pool closes a returned connection whenever it already
    # holds minconn idle ones, so a smaller minconn would mean a new connection per request.
    return ThreadedConnectionPool(
        config["POOL_SIZE"],
        config["POOL_SIZE"],
        config["DATABASE_URL"],
        connect_timeout=config["CONNECT_TIMEOUT_S"],
        options=options,
        application_name="identity",
        connection_factory=ServiceConnection,
    )


def get_db():
    """The request's connection, taken from the pool on first use."""
    if "db" not in g:
        _wait_for_free_connection()
        try:
            conn = _pool(current_app).getconn()
        except (psycopg2.OperationalError, PoolError) as error:
            current_app.extensions["identity_pool_slots"].release()
            raise DatabaseUnavailable() from error
        current_app.extensions["identity_metrics"].connections_in_use.inc()
        g.db = conn
        if not conn.statements_prepared:
            _prepare(conn)
    return g.db


def _wait_for_free_connection() -> None:
    """psycopg2's pool fails at once when every connection is taken; queue instead.

    With POOL_SIZE = THREADS nobody ever waits; a smaller pool makes requests wait up to
    CONNECT_TIMEOUT_S for a connection, then answer 503."""
    slots = current_app.extensions["identity_pool_slots"]
    if slots.acquire(blocking=False):
        return
    waiting = current_app.extensions["identity_metrics"].pool_waiting
    waiting.inc()
    try:
        free = slots.acquire(timeout=current_app.config["CONNECT_TIMEOUT_S"])
    finally:
        waiting.dec()
    if not free:
        raise DatabaseUnavailable("no free connection")


def _prepare(conn) -> None:
    try:
        repository.prepare_statements(conn)
    except errors.UndefinedTable:
        raise SchemaMissing() from None
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
        raise DatabaseUnavailable() from error
    conn.statements_prepared = True


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
    _give_back(conn, close=bool(broken))


def _discard_db() -> None:
    conn = g.pop("db", None)
    if conn is not None:
        _give_back(conn, close=True)


def _give_back(conn, close: bool) -> None:
    current_app.extensions["identity_pool"].putconn(conn, close=close)
    current_app.extensions["identity_metrics"].connections_in_use.dec()
    current_app.extensions["identity_pool_slots"].release()


def _rollback_quietly(conn) -> None:
    try:
        conn.cursor().execute("ROLLBACK")
    except psycopg2.Error:
        _discard_db()


def run_unit(work):
    """Run work(conn) to completion, retrying it whole on conflicts and lost connections.

    Conflicts (serialization failure, deadlock, lock timeout, RetryTransaction) are
    retried after a short random pause, up to RETRY_BUDGET times. A connection that the
    database dropped (a restart, say) is replaced and the unit run again: every unit of
    this service may safely run twice, since a repeated checkout changes nothing.
    """
    budget = current_app.config["RETRY_BUDGET"]
    for attempt in range(budget + 1):
        conn = get_db()
        try:
            return work(conn)
        except (*_CONFLICTS, RetryTransaction) as conflict:
            _rollback_quietly(conn)
            current_app.extensions["identity_metrics"].retries.labels(type(conflict).__name__).inc()
            time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
            if not conn.closed:  # the server answered, too late: statement timeout
                _rollback_quietly(conn)
                raise DatabaseUnavailable() from error
            _discard_db()
    raise DatabaseUnavailable("retry budget exhausted")


def close_pool(app: Flask) -> None:
    pool = app.extensions.pop("identity_pool", None)
    if pool is not None:
        pool.closeall()


def init_app(app: Flask) -> None:
    app.extensions["identity_pool_slots"] = threading.BoundedSemaphore(app.config["POOL_SIZE"])
    app.teardown_appcontext(release_db)
