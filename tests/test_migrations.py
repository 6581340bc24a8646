"""The migration ledger: each sql/ file applied once, in order, recorded with its checksum."""

import shutil
import threading
import uuid

import psycopg2
import pytest
from conftest import client_on
from psycopg2.extensions import make_dsn

from identity import create_app
from identity.config import PROJECT_ROOT
from identity.database import ledger as ledger_sql
from identity.database import migrations, transaction
from identity.database.migrations import MigrationError, discover, migrate

SCHEMA_DIR = PROJECT_ROOT / "sql"
# What `make db-init` applied before the ledger existed: these two files, every time.
PRE_LEDGER_FILES = ("001_contact.sql", "002_contact_event.sql")


@pytest.fixture
def fresh_database(database_url):
    """The URL of a new, empty database on the test server, dropped afterwards."""
    name = "migrations_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    yield make_dsn(database_url, dbname=name)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


def query(url: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def ledger(url: str) -> dict[str, str]:
    return dict(query(url, "SELECT name, checksum FROM schema_migration ORDER BY name"))


def test_a_fresh_database_gets_every_migration_in_order(fresh_database):
    report = migrate(fresh_database, SCHEMA_DIR)
    expected = [migration.name for migration in discover(SCHEMA_DIR)]
    assert report.applied == expected == sorted(expected)
    assert ledger(fresh_database) == {m.name: m.checksum for m in discover(SCHEMA_DIR)}
    assert query(fresh_database, "SELECT to_regclass('contact') IS NOT NULL") == [(True,)]


def test_a_second_run_applies_nothing(fresh_database):
    migrate(fresh_database, SCHEMA_DIR)
    before = query(fresh_database, "SELECT name, appliedAt FROM schema_migration ORDER BY name")
    report = migrate(fresh_database, SCHEMA_DIR)
    assert report.applied == []
    assert report.already_applied == [m.name for m in discover(SCHEMA_DIR)]
    assert (
        query(fresh_database, "SELECT name, appliedAt FROM schema_migration ORDER BY name")
        == before
    )


def test_init_db_reports_what_it_applied(fresh_database):
    runner = create_app({"DATABASE_URL": fresh_database}).test_cli_runner()
    first = runner.invoke(args=["init-db"])
    assert first.exit_code == 0, first.output
    assert "applied 001_contact.sql" in first.output
    second = runner.invoke(args=["init-db"])
    assert second.exit_code == 0, second.output
    assert not any(line.startswith("applied ") for line in second.output.splitlines())
    assert f"0 applied now, {len(discover(SCHEMA_DIR))} already applied" in second.output


# Example B of SPEC §5 as the previous release stored it: george (11) and biff (27), two
# primaries, merged by a checkout; and lorraine with a secondary. Its rows and events.
PREVIOUS_RELEASE_DATA = """
INSERT INTO contact (id, email, phoneNumber, linkedId, linkPrecedence, createdAt)
OVERRIDING SYSTEM VALUE VALUES
    (1, 'lorraine@hillvalley.edu', '123456', NULL, 'primary', '2023-04-01 00:00:00+00'),
    (2, 'mcfly@hillvalley.edu', '123456', 1, 'secondary', '2023-04-20 05:30:00+00'),
    (11, 'george@hillvalley.edu', '919191', NULL, 'primary', '2023-04-11 00:00:00+00'),
    (27, 'biffsucks@hillvalley.edu', '717171', 11, 'secondary', '2023-04-21 05:30:00+00');
INSERT INTO contact_event (requestId, kind, contactId, primaryId, email, phoneNumber)
VALUES ('r1', 'customer_created', 1, 1, 'lorraine@hillvalley.edu', '123456'),
       ('r2', 'customer_created', 11, 11, 'george@hillvalley.edu', '919191'),
       ('r3', 'secondary_added', 2, 1, 'mcfly@hillvalley.edu', '123456'),
       ('r4', 'customer_created', 27, 27, 'biffsucks@hillvalley.edu', '717171'),
       ('r5', 'primary_demoted', 27, 11, 'george@hillvalley.edu', '717171');
"""


def _pre_ledger_database_with_customers(url: str) -> None:
    """The schema as the release before the ledger left it (its two files applied as it
    applied them), holding customers."""
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        for name in PRE_LEDGER_FILES:
            cur.execute((SCHEMA_DIR / name).read_text())
        cur.execute(PREVIOUS_RELEASE_DATA)
    conn.close()


CONTACTS = (
    "SELECT id, email, phoneNumber, linkedId, linkPrecedence, createdAt, updatedAt, deletedAt"
    " FROM contact ORDER BY id"
)
EVENTS = (
    "SELECT id, occurredAt, requestId, kind, contactId, primaryId, email, phoneNumber,"
    " repointedIds FROM contact_event ORDER BY id"
)


def test_a_database_of_the_previous_release_is_adopted_and_upgraded(fresh_database):
    _pre_ledger_database_with_customers(fresh_database)
    contacts, events = query(fresh_database, CONTACTS), query(fresh_database, EVENTS)
    assert len(contacts) == 4 and len(events) == 5

    report = migrate(fresh_database, SCHEMA_DIR)

    assert report.applied == [m.name for m in discover(SCHEMA_DIR)]
    assert query(fresh_database, CONTACTS) == contacts
    assert query(fresh_database, EVENTS) == events
    assert migrate(fresh_database, SCHEMA_DIR).applied == []
    # And the upgraded database serves: the customers are there, linked as before.
    with client_on(fresh_database) as client:
        answer = client.post("/identify", json={"phoneNumber": "717171"}).get_json()
    assert answer["contact"] == {
        "primaryContactId": 11,
        "emails": ["george@hillvalley.edu", "biffsucks@hillvalley.edu"],
        "phoneNumbers": ["919191", "717171"],
        "secondaryContactIds": [27],
    }


def test_a_changed_applied_migration_is_refused(fresh_database, tmp_path):
    schema_dir = tmp_path / "sql"
    shutil.copytree(SCHEMA_DIR, schema_dir)
    migrate(fresh_database, schema_dir)
    edited = schema_dir / "002_contact_event.sql"
    edited.write_text(edited.read_text() + "\n-- an afterthought\n")
    (schema_dir / "999_later.sql").write_text("CREATE TABLE later (id integer);")

    with pytest.raises(MigrationError, match="002_contact_event.sql"):
        migrate(fresh_database, schema_dir)
    assert "999_later.sql" not in ledger(fresh_database)  # nothing ran

    runner = create_app(
        {"DATABASE_URL": fresh_database, "SCHEMA_DIR": schema_dir}
    ).test_cli_runner()
    result = runner.invoke(args=["init-db"])
    assert result.exit_code != 0 and "has changed" in result.output


def test_a_failing_migration_leaves_no_trace(fresh_database, tmp_path):
    schema_dir = tmp_path / "sql"
    shutil.copytree(SCHEMA_DIR, schema_dir)
    (schema_dir / "998_half.sql").write_text(
        "CREATE TABLE half_done (id integer); SELECT no_such_function();"
    )
    with pytest.raises(MigrationError, match="998_half.sql"):
        migrate(fresh_database, schema_dir)
    assert "998_half.sql" not in ledger(fresh_database)
    assert query(fresh_database, "SELECT to_regclass('half_done')") == [(None,)]


def test_a_misnamed_file_is_refused(tmp_path):
    (tmp_path / "add-column.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="add-column.sql"):
        discover(tmp_path)


def test_concurrent_runs_apply_each_migration_once(fresh_database, tmp_path):
    schema_dir = tmp_path / "sql"
    shutil.copytree(SCHEMA_DIR, schema_dir)
    # A slow last migration keeps the first run busy while the second one starts.
    (schema_dir / "999_slow.sql").write_text(
        "SELECT pg_sleep(0.5); CREATE TABLE slow_done (id integer);"
    )
    start = threading.Barrier(2)
    reports, failures = [], []

    def deploy():
        start.wait()
        try:
            reports.append(migrate(fresh_database, schema_dir))
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            failures.append(error)

    threads = [threading.Thread(target=deploy) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert failures == []
    applied = [name for report in reports for name in report.applied]
    assert sorted(applied) == [m.name for m in discover(schema_dir)]  # each exactly once
    # Taking turns per migration, each run applied its share in file order.
    assert all(report.applied == sorted(report.applied) for report in reports)
    assert query(fresh_database, "SELECT to_regclass('slow_done') IS NOT NULL") == [(True,)]


def test_a_run_waits_for_the_migration_lock_only_so_long(fresh_database, monkeypatch):
    monkeypatch.setattr(migrations, "MIGRATION_LIMITS", transaction.Limits(0, 100, 0))
    monkeypatch.setattr(migrations, "MIGRATION_RETRIES", 2)
    holder = psycopg2.connect(fresh_database)
    try:
        with holder.cursor() as cur:  # a transaction of another run, stuck mid-migration
            cur.execute(ledger_sql.LOCK_MIGRATIONS)
        refused = "could not get the migration lock in 3 attempts: another init-db"
        with pytest.raises(MigrationError, match=refused):
            migrate(fresh_database, SCHEMA_DIR)
    finally:
        holder.close()
    assert migrate(fresh_database, SCHEMA_DIR).applied == [m.name for m in discover(SCHEMA_DIR)]


def test_init_db_uses_the_migration_url_when_it_is_set(fresh_database):
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    app = create_app({"DATABASE_URL": unreachable, "MIGRATION_DATABASE_URL": fresh_database})
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert ledger(fresh_database).keys() == {m.name for m in discover(SCHEMA_DIR)}


def test_a_database_that_applied_001_before_its_comment_was_corrected_migrates(fresh_database):
    """001's first comment once named a document the repository does not ship; the
    statements are unchanged, so a ledger holding that text's checksum is accepted."""
    migrate(fresh_database, SCHEMA_DIR)
    conn = psycopg2.connect(fresh_database)
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE schema_migration SET checksum = %s WHERE name = '001_contact.sql'",
            ("723407f508165b6cb520254682de979063ac408a76babed9bcd8916e69970ab3",),
        )
    conn.close()
    assert migrate(fresh_database, SCHEMA_DIR).applied == []
