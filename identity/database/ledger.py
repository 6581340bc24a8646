"""The migration ledger's SQL: which files of sql/ a database has applied (migrations.py)."""

# One key for every migration run: concurrent runs take turns, one migration at a time.
# A transaction lock, released at the migration's commit: a session lock would outlive
# the run on a pooler's server connection.
LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(hashtextextended('identity schema migrations', 0))"

# The bound on this transaction's lock waits (the migration lock's and the tables' a
# migration changes), for this transaction only.
BOUND_LOCK_WAITS = "SELECT set_config('lock_timeout', %(lock_ms)s, true)"

CREATE_MIGRATION_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migration (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,  -- SHA-256 of the file as applied, in hex
    appliedAt  timestamptz NOT NULL DEFAULT now()
)
"""

APPLIED_MIGRATIONS = "SELECT name, checksum FROM schema_migration"

RECORD_MIGRATION = "INSERT INTO schema_migration (name, checksum) VALUES (%(name)s, %(checksum)s)"


def bound_lock_waits(conn, seconds: float) -> None:
    with conn.cursor() as cur:
        cur.execute(BOUND_LOCK_WAITS, {"lock_ms": str(max(1, round(seconds * 1000)))})


def lock_migrations(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(LOCK_MIGRATIONS)


def create_migration_ledger(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(CREATE_MIGRATION_LEDGER)


def applied_migrations(conn) -> dict[str, str]:
    """name -> checksum of every migration the database has applied."""
    with conn.cursor() as cur:
        cur.execute(APPLIED_MIGRATIONS)
        return dict(cur.fetchall())


def record_migration(conn, name: str, checksum: str) -> None:
    with conn.cursor() as cur:
        cur.execute(RECORD_MIGRATION, {"name": name, "checksum": checksum})
