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
the next run for good.

Lock waits are short and bounded: each attempt waits at most MIGRATION_LIMITS.lock_ms
for the migration lock or for a table lock (requests queue behind a DDL statement waiting for its
lock), and is retried a few times under the one retry policy (transaction.py); then the
run stops with an error that says which lock it could not get.

A database made before the ledger existed holds the tables of 001 and 002 but no ledger;
those two files are idempotent (`IF NOT EXISTS`, `CREATE OR REPLACE`), so applying them
again changes nothing and records them, and the newer migrations follow.
"""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from . import ledger, transaction

_MIGRATION_NAME = re.compile(r"[0-9]{3}_[a-z0-9_]+\.sql")
# Each migration's transaction: no statement limit (an index on a large table takes what
# it takes), but its lock waits are short, since requests queue behind a waiting lock.
MIGRATION_LIMITS = transaction.Limits(statement_ms=0, lock_ms=5000, idle_ms=0)
MIGRATION_RETRIES = 5
CONNECT_TIMEOUT_S = 10
# Checksums of earlier texts of a migration that differ from today's file in comments
# only: a database that applied one has the schema the file describes now. 001's first
# comment named a document the repository does not ship.
_COMMENT_ONLY_EDITS = {
    "001_contact.sql": {"723407f508165b6cb520254682de979063ac408a76babed9bcd8916e69970ab3"},
}


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


def migrate(database_url: str, schema_dir: Path) -> Report:
    """Apply every pending migration; refuse if an applied one has changed."""
    migrations = discover(schema_dir)
    conn = psycopg2.connect(
        database_url, application_name="identity-migrate", connect_timeout=CONNECT_TIMEOUT_S
    )
    conn.autocommit = True  # transactions are opened explicitly (transaction.begin)
    applied: list[str] = []
    try:
        with conn.cursor() as cur:
            while (migration := _apply_next(cur, migrations)) is not None:
                applied.append(migration.name)
    finally:
        conn.close()
    return Report(
        applied=applied,
        already_applied=[m.name for m in migrations if m.name not in applied],
    )


def _apply_next(cur, migrations: list[Migration]) -> Migration | None:
    """One transaction, retried after a lock wait that ran out: the first pending
    migration and its ledger row (None: none left)."""
    waiting_for = ["the migration lock"]  # what the attempt waits for, for the error

    def attempt() -> Migration | None:
        waiting_for[0] = "the migration lock"
        transaction.begin(cur, ledger.LOCK_MIGRATIONS, limits=MIGRATION_LIMITS)
        ledger.create_migration_ledger(cur)
        recorded = ledger.applied_migrations(cur)
        _refuse_changed(migrations, recorded)
        pending = [migration for migration in migrations if migration.name not in recorded]
        if pending:
            waiting_for[0] = f"a table lock for {pending[0].name}"
            cur.execute(pending[0].sql)
            ledger.record_migration(cur, pending[0].name, pending[0].checksum)
        transaction.commit(cur)
        return pending[0] if pending else None

    try:
        return transaction.run(
            attempt, budget=MIGRATION_RETRIES, rollback=lambda: _rollback(cur), pause_cap_s=1.0
        )
    except transaction.GaveUp:
        attempts = f"in {MIGRATION_RETRIES + 1} attempts"
        if waiting_for[0] == "the migration lock":
            reason = f"could not get the migration lock {attempts}: another init-db is "
            reason += "applying a migration; run init-db again when it is done"
        else:
            reason = f"{waiting_for[0].removeprefix('a table lock for ')} could not get its "
            reason += f"locks {attempts}: other sessions hold the tables it changes; run it "
            reason += "again when they are done"
        raise MigrationError(reason) from None
    except psycopg2.Error as error:
        _rollback(cur)
        name = waiting_for[0].removeprefix("a table lock for ")
        raise MigrationError(f"{name} failed: {error.pgerror or error}") from error
    except MigrationError:
        _rollback(cur)
        raise


def _rollback(cur) -> None:
    """After a failure: the connection may be gone with it, and the failure says why."""
    try:
        transaction.rollback(cur)
    except psycopg2.Error:
        pass


def _refuse_changed(migrations: list[Migration], recorded: dict[str, str]) -> None:
    changed = [
        m.name
        for m in migrations
        if recorded.get(m.name, m.checksum)
        not in {m.checksum, *_COMMENT_ONLY_EDITS.get(m.name, ())}
    ]
    if changed:
        raise MigrationError(
            f"already applied, but the file has changed since: {', '.join(changed)}. "
            "Applied migrations are immutable: restore the file and put the change in a "
            "new migration."
        )
