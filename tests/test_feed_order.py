"""The feed's order is numeric in the writing transaction's id, across a power of ten.

Found by `make soak`: the page query ordered by the text of the transaction id, so once
ids reached four digits a reader from the start skipped every event of a three-digit
transaction, and a follower saw some twice.
"""

import psycopg2
from conftest import identify

BEFORE, AFTER = 5, 5


def read_all(client, limit: int) -> list[int]:
    ids, after = [], None
    while True:
        page = client.get(
            "/events", query_string={"limit": limit, **({"after": after} if after else {})}
        ).get_json()
        if not page["events"]:
            return ids
        ids += [event["id"] for event in page["events"]]
        after = page["next"]


def burn_transaction_ids_until(database_url: str, below: int) -> None:
    """Start and end transactions until the next one to take an id gets `below` - 1 or more."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT pg_current_xact_id()::text::bigint")  # takes an id, commits
            if cur.fetchone()[0] >= below - 2:
                break
    conn.close()


def next_power_of_ten(database_url: str) -> int:
    conn = psycopg2.connect(database_url)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_current_xact_id()::text::bigint")
        current = cur.fetchone()[0]
    conn.close()
    return 10 ** len(str(current + BEFORE + 10))


def test_events_of_transactions_on_both_sides_of_a_power_of_ten_come_once_in_order(
    client, db, database_url
):
    burn_transaction_ids_until(database_url, next_power_of_ten(database_url) - BEFORE)
    for n in range(BEFORE + AFTER):  # each checkout is one transaction: ids cross the power
        identify(client, {"email": f"digits{n}@x.io"})
    with db.cursor() as cur:
        cur.execute("SELECT id FROM contact_event ORDER BY id")
        written = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT count(DISTINCT length(txid::text)) FROM contact_event")
        assert cur.fetchone()[0] == 2  # the transaction ids have two lengths
    for limit in (3, 100):
        assert read_all(client, limit) == written
