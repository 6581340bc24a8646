"""Erasure and PostgreSQL's own files: the maintenance step docs/corrections.md documents
leaves an erased value in no relation file of the database (tables, indexes, TOAST).

The files are read directly, after a CHECKPOINT has written every changed page to them.
The erased rows are the last ones written, the case where a plain VACUUM leaves their
bytes in the free space of a page."""

import os
import re
from pathlib import Path

import pytest
from conftest import identify

from identity.config import PROJECT_ROOT

EMAIL, PHONE = "erase.me.please@example.com", "+447700900123"
OTHER = "stays.here@example.com"
STEP_HEADING = "### What stays in PostgreSQL's files, and the step that removes it"


def documented_step() -> list[str]:
    """The SQL statements of the step, as docs/corrections.md shows them."""
    text = (PROJECT_ROOT / "docs" / "corrections.md").read_text()
    section = text[text.index(STEP_HEADING) :]
    block = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
    return [statement.strip() for statement in block.split(";") if statement.strip()]


@pytest.fixture
def data_directory(db) -> Path:
    with db.cursor() as cur:
        cur.execute("SHOW data_directory")
        folder = Path(cur.fetchone()[0])
    if not os.access(folder / "base", os.R_OK | os.X_OK):
        pytest.skip("the database's files are not readable here (a server elsewhere)")
    return folder


def files_holding(cur, data_directory: Path, value: str) -> list[str]:
    """The relations of this database whose files hold `value`'s bytes."""
    cur.execute("CHECKPOINT")
    cur.execute(
        "SELECT c.relname, pg_relation_filepath(c.oid) FROM pg_class c"
        " WHERE c.relnamespace IN ('public'::regnamespace, 'pg_toast'::regnamespace)"
        "   AND pg_relation_filepath(c.oid) IS NOT NULL"
    )
    holding = set()
    for name, path in cur.fetchall():
        first = data_directory / path
        for segment in [first, *first.parent.glob(f"{first.name}.*")]:
            if segment.is_file() and value.encode() in segment.read_bytes():
                holding.add(name)
    return sorted(holding)


def test_after_the_documented_step_no_relation_file_holds_an_erased_value(
    client, db, data_directory
):
    for number in range(200):
        identify(client, {"email": f"customer.{number}@example.com", "phoneNumber": f"555{number}"})
    identify(client, {"email": OTHER, "phoneNumber": "5550000"})
    primary = identify(client, {"email": EMAIL, "phoneNumber": PHONE})["primaryContactId"]
    identify(client, {"email": f"second.{EMAIL}", "phoneNumber": PHONE})
    assert client.delete(f"/contacts/{primary}").status_code == 200

    with db.cursor() as cur:
        # The scan sees the values where the docs say they are.
        assert "contact_email_live" in files_holding(cur, data_directory, EMAIL)
        assert "contact" in files_holding(cur, data_directory, PHONE)
        cur.execute("VACUUM contact, contact_event, suspected_hub, blocked_value")
        assert files_holding(cur, data_directory, EMAIL) + files_holding(
            cur, data_directory, PHONE
        ), "a plain VACUUM is documented as not enough"

        for statement in documented_step():
            cur.execute(statement)
        for value in (EMAIL, PHONE):
            assert files_holding(cur, data_directory, value) == [], value
        assert "contact" in files_holding(cur, data_directory, OTHER)  # live data stays
    assert identify(client, {"email": OTHER})["primaryContactId"] == 201
