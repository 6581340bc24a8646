"""The migration ledger's SQL: which files of sql/ a database has applied (migrations.py).

Functions take a cursor inside the migration's transaction."""

# One key for every migration run: concurrent runs take turns, one migration at a time.
# A transaction lock, released at the migration's commit: a session lock would outlive
# the run on a pooler's server connection.
LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(hashtextextended('identity schema migrations', 0))"

CREATE_MIGRATION_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migration (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,  -- SHA-256 of the file as applied, in hex
    appliedAt  timestamptz NOT NULL DEFAULT now()
)
"""

APPLIED_MIGRATIONS = "SELECT name, checksum FROM schema_migration"

RECORD_MIGRATION = "INSERT INTO schema_migration (name, checksum) VALUES (%(name)s, %(checksum)s)"


def create_migration_ledger(cur) -> None:
    cur.execute(CREATE_MIGRATION_LEDGER)


def applied_migrations(cur) -> dict[str, str]:
    """name -> checksum of every migration the database has applied."""
    cur.execute(APPLIED_MIGRATIONS)
    return dict(cur.fetchall())


def record_migration(cur, name: str, checksum: str) -> None:
    cur.execute(RECORD_MIGRATION, {"name": name, "checksum": checksum})
