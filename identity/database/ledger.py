"""The migration ledger's SQL: which files of sql/ a database has applied (migrations.py)."""

# One key for every migration run: concurrent runs wait for each other. A session lock,
# since every migration commits on its own.
LOCK_MIGRATIONS = "SELECT pg_advisory_lock(hashtextextended('identity schema migrations', 0))"

CREATE_MIGRATION_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migration (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,  -- SHA-256 of the file as applied, in hex
    appliedAt  timestamptz NOT NULL DEFAULT now()
)
"""

APPLIED_MIGRATIONS = "SELECT name, checksum FROM schema_migration"

RECORD_MIGRATION = "INSERT INTO schema_migration (name, checksum) VALUES (%(name)s, %(checksum)s)"


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
