"""The kinds of history and feed event have one definition (identity/feed/kinds.py):
the database's CHECK constraint, the schemas, the console and the docs agree with it."""

import re
from pathlib import Path

from identity.feed import kinds
from identity.feed.events import FeedEvent
from identity.web.schemas import HistoryEvent

ROOT = Path(__file__).resolve().parent.parent


def test_the_check_constraint_allows_exactly_the_history_kinds(db):
    with db.cursor() as cur:
        cur.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conname = 'contact_event_kind_valid'"
            " AND conrelid = 'contact_event'::regclass"
        )
        (definition,) = cur.fetchone()
    # e.g. CHECK ((kind = ANY (ARRAY['customer_created'::text, ...])))
    allowed = re.findall(r"'([a-z_]+)'::text", definition)
    assert sorted(allowed) == sorted(kinds.HISTORY_KINDS), definition


def test_the_schemas_enumerate_the_kinds_from_the_one_definition():
    assert HistoryEvent().fields["kind"].metadata["enum"] == list(kinds.HISTORY_KINDS)
    assert FeedEvent().fields["kind"].metadata["enum"] == kinds.FEED_KINDS


def test_every_feed_kind_is_made_from_one_history_kind():
    assert set(kinds.FEED_SOURCE_KINDS) <= set(kinds.HISTORY_KINDS)
    assert len(set(kinds.FEED_KINDS)) == len(kinds.FEED_SOURCE_KINDS)
    assert kinds.feed_kind("primary_demoted") == "customers_merged"
    assert "rows_repointed" not in kinds.FEED_SOURCE_KINDS


def test_the_console_describes_only_kinds_that_exist():
    template = ROOT / "identity/web/console/templates/customer.html"
    described = set(re.findall(r"event\.kind == '([a-z_]+)'", template.read_text()))
    assert described and described <= set(kinds.HISTORY_KINDS), described


def test_the_feed_docs_list_every_feed_kind():
    """The table of docs/feed.md that starts with a `kind` column names each kind once."""
    lines = (ROOT / "docs/feed.md").read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("| kind |"))
    end = next(n for n in range(start, len(lines) + 1) if n == len(lines) or not lines[n])
    first_cells = [line.split("|")[1] for line in lines[start + 2 : end]]
    documented = [kind for cell in first_cells for kind in re.findall(r"`([a-z_]+)`", cell)]
    assert sorted(documented) == sorted(kinds.FEED_KINDS)
