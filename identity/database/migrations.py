"""The migration ledger: every `sql/NNN_name.sql` file applied once, in name order.

Each pending migration runs in its own transaction together with the ledger row that
records it (name and SHA-256 of the file), so a migration is either applied and recorded
or neither. A migration whose file changed after it was applied is refused: the schema a
database has must be the one its files describe. A session-level advisory lock makes
concurrent runs (two hosts deploying at once) take turns: the second reads the ledger
after the first has finished and finds nothing left to do.

A database made before the ledger existed holds the tables of 001 and 002 but no ledger;
those two files are idempotent (`IF NOT EXISTS`, `CREATE OR REPLACE`), so applying them
again changes nothing and records them, and the newer migrations follow.
"""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from . import ledger

_MIGRATION_NAME = re.compile(r"[0-9]{3}_[a-z0-9_]+\.sql")
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
    conn = psycopg2.connect(database_url, application_name="identity-migrate")
    conn.autocommit = True
    try:
        ledger.lock_migrations(conn)  # held until the connection closes
        ledger.create_migration_ledger(conn)
        recorded = ledger.applied_migrations(conn)
        _refuse_changed(migrations, recorded)
        pending = [migration for migration in migrations if migration.name not in recorded]
        for migration in pending:
            _apply(conn, migration)
    finally:
        conn.close()
    return Report(
        applied=[migration.name for migration in pending],
        already_applied=[m.name for m in migrations if m.name in recorded],
    )


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


def _apply(conn, migration: Migration) -> None:
    """The migration and its ledger row, in one transaction."""
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        try:
            cur.execute(migration.sql)
            ledger.record_migration(conn, migration.name, migration.checksum)
            cur.execute("COMMIT")
        except psycopg2.Error as error:
            cur.execute("ROLLBACK")
            raise MigrationError(f"{migration.name} failed: {error.pgerror or error}") from error
