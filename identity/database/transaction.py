"""The one owner of transactions: the only code that sends BEGIN, COMMIT and ROLLBACK,
and the one retry policy with the one list of errors worth a retry.

Connections run in autocommit mode. The repositories hand their statements to `execute`,
`begin` and `commit`, which join them with the transaction control into one string: one
round trip, as before. Several statements in one string run as one (implicit)
transaction, so even a read gets its limits for itself alone.

Nothing outlives a transaction, so a connection pooler in transaction mode (PgBouncer)
may hand the server connection to another client after every transaction: no SQL-level
PREPARE, no startup options, and the limits of an attempt (statement_timeout,
lock_timeout, idle_in_transaction_session_timeout, jit) are set with
set_config(..., true), which PostgreSQL undoes when the transaction ends. The limits of
the next attempt are those of the connection's `limits` attribute, or of the `limits`
argument.

A unit of work may run again after its COMMIT was sent but its answer was lost (a lost
connection, a failover): every unit is written to be safe to run twice. A checkout and an
import batch change nothing the second time; a correction recognises its own request id
(identity/customers/corrections.py).
"""

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from psycopg2 import errors, extensions

T = TypeVar("T")


class RetryTransaction(Exception):
    """Raised by a unit of work that must be rolled back and run again."""


class ConnectionLost(Exception):
    """The attempt's connection is gone (its transaction with it): run the unit again on
    a new connection, at once."""


class GaveUp(Exception):
    """Every attempt the retry budget allowed ended in a conflict, or time ran out."""

    def __init__(self, conflicts: int):
        super().__init__(f"{conflicts} conflicting attempts")
        self.conflicts = conflicts


# Conflicts between concurrent writers that PostgreSQL resolves by aborting one of them,
# and units that found the data changed under them: the unit is rolled back and run again
# from its start, never a single statement. The one list for checkouts, corrections,
# import batches and migrations.
RETRYABLE = (
    errors.SerializationFailure,
    errors.DeadlockDetected,
    errors.LockNotAvailable,
    RetryTransaction,
)


@dataclass(frozen=True)
class Limits:
    """What one attempt may take on the server, in ms (0: no limit)."""

    statement_ms: int
    lock_ms: int
    # A transaction of ours idle this long belongs to a frozen or cut-off process: the
    # server ends it, so that its locks do not stall every other writer.
    idle_ms: int


# The attempt's limits, for its transaction only. jit is off: the planner's cost for a
# customer of thousands of rows passes jit_above_cost, and compiling took 170 ms per
# request, with the write's locks held; nothing this service runs gains from JIT.
SET_LIMITS = """
SELECT set_config('statement_timeout', %(limit_statement_ms)s, true),
       set_config('lock_timeout', %(limit_lock_ms)s, true),
       set_config('idle_in_transaction_session_timeout', %(limit_idle_ms)s, true),
       set_config('jit', 'off', true)
"""


class Connection(extensions.connection):
    """A connection that carries the limits of its next attempt."""

    limits: Limits | None = None


def _limits(cur, limits: Limits | None) -> tuple[list[str], dict]:
    """SET_LIMITS and its parameters for the attempt, or nothing without limits."""
    limits = limits or getattr(cur.connection, "limits", None)
    if limits is None:
        return [], {}
    values = {
        "limit_statement_ms": str(limits.statement_ms),
        "limit_lock_ms": str(limits.lock_ms),
        "limit_idle_ms": str(limits.idle_ms),
    }
    return [SET_LIMITS], values


def execute(cur, sql: str, params=None, limits: Limits | None = None) -> None:
    """sql (one statement or several joined): one round trip. Outside an explicit
    transaction it runs as an implicit one, under the attempt's limits; inside one, under
    the limits that begin() set. The cursor holds the last statement's rows."""
    if in_transaction(cur.connection):
        cur.execute(sql, params)
        return
    setting, values = _limits(cur, limits)
    cur.execute(";".join([*setting, sql]), {**(params or {}), **values} if values else params)


def begin(
    cur, sql: str | None = None, params=None, isolation: str = "", limits: Limits | None = None
) -> None:
    """BEGIN (with isolation, e.g. "ISOLATION LEVEL REPEATABLE READ READ ONLY"), the
    attempt's limits, then sql: one round trip."""
    setting, values = _limits(cur, limits)
    statements = [f"BEGIN {isolation}".strip(), *setting, *([sql] if sql else [])]
    cur.execute(";".join(statements), {**(params or {}), **values} if values else params)


def commit(cur, sql: str | None = None, params=None, then: str | None = None) -> None:
    """sql, COMMIT, then `then` (a statement outside the transaction, e.g. a read-back
    on the same server session): one round trip."""
    statements = [*([sql] if sql else []), "COMMIT", *([then] if then else [])]
    cur.execute(";".join(statements), params)


def rollback(cur) -> None:
    cur.execute("ROLLBACK")


def in_transaction(conn) -> bool:
    return conn.info.transaction_status != extensions.TRANSACTION_STATUS_IDLE


def pause_s(attempt: int, cap_s: float) -> float:
    """Random pause before retry number attempt + 1: exponential from 2 ms, capped, with
    full jitter, so that conflicting writers do not meet again at the same instant."""
    return random.uniform(0, min(cap_s, 0.002 * 2**attempt))


def run(
    attempt: Callable[[], T],
    *,
    budget: int,
    rollback: Callable[[], None],
    pause_cap_s: float,
    time_left: Callable[[], bool] = lambda: True,
    on_conflict: Callable[[Exception], None] = lambda conflict: None,
) -> T:
    """The retry policy: attempt() until it returns, at most budget + 1 times.

    After a RETRYABLE error: rollback(), on_conflict(error), a short random pause, and
    again. After ConnectionLost: again at once (attempt() takes a new connection). Raises
    GaveUp when the budget is spent or time_left() says no."""
    conflicts = 0
    for number in range(budget + 1):
        if not time_left():
            break
        try:
            return attempt()
        except RETRYABLE as conflict:
            conflicts += 1
            rollback()
            on_conflict(conflict)
            time.sleep(pause_s(number, pause_cap_s))
        except ConnectionLost:
            pass
    raise GaveUp(conflicts)
