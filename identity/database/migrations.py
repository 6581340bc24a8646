"""The migration ledger: every `sql/NNN_name.sql` file applied once, in name order.

Each pending migration runs in its own transaction together with the ledger row that
records it (name and SHA-256 of the file), so a migration is either applied and recorded
or neither. A migration whose file changed after it was applied is refused: the schema a
database has must be the one its files describe.

Every transaction takes the migration lock (a transaction-scoped advisory lock), reads
the ledger and applies the first migration still pending. Concurrent runs (two hosts
deploying at once) take turns per migration and each migration is applied once, in
order. Nothing outlives a transaction, so this works through a transaction-mode pooler
(PgBouncer): a session lock would stay behind on the pooled server connection and block
the next run for good. Lock waits are bounded (lock_wait_s): a run that cannot get the
migration lock, or a table lock a migration needs, stops with an error that says which.

A database made before the ledger existed holds the tables of 001 and 002 but no ledger;
those two files are idempotent (`IF NOT EXISTS`, `CREATE OR REPLACE`), so applying them
again changes nothing and records them, and the newer migrations follow.
"""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import errors

from . import ledger

_MIGRATION_NAME = re.compile(r"[0-9]{3}_[a-z0-9_]+\.sql")
# How long a run waits for the migration lock, and a migration for a table lock.
LOCK_WAIT_S = 60.0
CONNECT_TIMEOUT_S = 10


class MigrationError(Exception):
    """The migrations cannot be applied as they stand; the message says why."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str
    checksum: str

    @classmethod
    def read(cls, path: Path) -> "Migration":
        data = path.read_bytes()
        return cls(path.name, data.decode("utf-8"), hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Report:
    applied: list[str]  # applied by this run, in order
    already_applied: list[str]


def discover(schema_dir: Path) -> list[Migration]:
    """The migrations in schema_dir, in name order; a misnamed .sql file is an error."""
    paths = sorted(schema_dir.glob("*.sql"))
    misnamed = [path.name for path in paths if not _MIGRATION_NAME.fullmatch(path.name)]
    if misnamed:
        raise MigrationError(
            f"migration files must be named NNN_name.sql: {', '.join(misnamed)}"
        )
    return [Migration.read(path) for path in paths]


def migrate(database_url: str, schema_dir: Path, lock_wait_s: float = LOCK_WAIT_S) -> Report:
    """Apply every pending migration; refuse if an applied one has changed."""
    migrations = discover(schema_dir)
    conn = psycopg2.connect(
        database_url, application_name="identity-migrate", connect_timeout=CONNECT_TIMEOUT_S
    )
    conn.autocommit = True
    applied: list[str] = []
    try:
        while (migration := _apply_next(conn, migrations, lock_wait_s)) is not None:
            applied.append(migration.name)
    finally:
        conn.close()
    return Report(
        applied=applied,
        already_applied=[m.name for m in migrations if m.name not in applied],
    )


def _apply_next(conn, migrations: list[Migration], lock_wait_s: float) -> Migration | None:
    """One transaction: the first pending migration and its ledger row (None: none left)."""
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        try:
            migration = _apply_first_pending(conn, migrations, lock_wait_s)
            cur.execute("COMMIT")
            return migration
        except BaseException:
            _rollback_quietly(conn)
            raise


def _rollback_quietly(conn) -> None:
    """After a failure: the connection may be gone with it, and the failure says why."""
    try:
        with conn.cursor() as cur:
            cur.execute("ROLLBACK")
    except psycopg2.Error:
        pass


def _apply_first_pending(
    conn, migrations: list[Migration], lock_wait_s: float
) -> Migration | None:
    ledger.bound_lock_waits(conn, lock_wait_s)
    try:
        ledger.lock_migrations(conn)
    except errors.LockNotAvailable:
        raise MigrationError(
            f"another init-db has held the migration lock for over {lock_wait_s:g} s; "
            "let it finish, then run init-db again"
        ) from None
    ledger.create_migration_ledger(conn)
    recorded = ledger.applied_migrations(conn)
    _refuse_changed(migrations, recorded)
    pending = [migration for migration in migrations if migration.name not in recorded]
    if not pending:
        return None
    _apply(conn, pending[0], lock_wait_s)
    return pending[0]


def _refuse_changed(migrations: list[Migration], recorded: dict[str, str]) -> None:
    changed = [m.name for m in migrations if recorded.get(m.name, m.checksum) != m.checksum]
    if changed:
        raise MigrationError(
            f"already applied, but the file has changed since: {', '.join(changed)}. "
            "Applied migrations are immutable: restore the file and put the change in a "
            "new migration."
        )


def _apply(conn, migration: Migration, lock_wait_s: float) -> None:
    """The migration and its ledger row, in the caller's transaction."""
    try:
        with conn.cursor() as cur:
            cur.execute(migration.sql)
        ledger.record_migration(conn, migration.name, migration.checksum)
    except errors.LockNotAvailable:
        raise MigrationError(
            f"{migration.name} waited over {lock_wait_s:g} s for a table lock: a long "
            "transaction holds a table it changes (see pg_stat_activity); run init-db again "
            "once it has ended"
        ) from None
    except psycopg2.Error as error:
        raise MigrationError(f"{migration.name} failed: {error.pgerror or error}") from error
