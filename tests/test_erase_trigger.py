"""The history's trigger lets erasure null the e-mail and phone number of an event and
change nothing else, whatever columns the table has (sql/007)."""

import psycopg2
import pytest
from conftest import identify

ERASING = "BEGIN; SELECT set_config('identity.erasing', 'on', true); "


@pytest.mark.parametrize(
    "change",
    [
        "txid = '1'::xid8",  # the feed's order (sql/003)
        "valueKind = 'email'",  # sql/006
        "kind = 'customer_erased'",
        "occurredAt = occurredAt - interval '1 day'",
        "repointedIds = '{1}'",
    ],
)
def test_an_erasing_update_changes_no_other_column(client, db, change):
    identify(client, {"email": "a@x.io", "phoneNumber": "1"})
    with db.cursor() as cur:
        with pytest.raises(psycopg2.errors.RaiseException):
            cur.execute(
                ERASING + f"UPDATE contact_event SET email = NULL, phoneNumber = NULL, {change}"
            )
        cur.execute("ROLLBACK")
        cur.execute("SELECT count(*) FROM contact_event WHERE email = 'a@x.io'")
        assert cur.fetchone()[0] == 1


def test_an_erasing_update_may_null_the_values(client, db):
    identify(client, {"email": "a@x.io", "phoneNumber": "1"})
    with db.cursor() as cur:
        cur.execute("SELECT to_jsonb(e) - 'email' - 'phonenumber' FROM contact_event e")
        before = cur.fetchall()
        cur.execute(ERASING + "UPDATE contact_event SET email = NULL, phoneNumber = NULL; COMMIT")
        cur.execute("SELECT to_jsonb(e) - 'email' - 'phonenumber' FROM contact_event e")
        assert cur.fetchall() == before
        cur.execute("SELECT count(*) FROM contact_event WHERE email IS NOT NULL")
        assert cur.fetchone()[0] == 0
