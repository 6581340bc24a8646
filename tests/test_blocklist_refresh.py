"""The stored blocklist is read before validation, never inside it, and no request waits
for another's read of it (identity/customers/blocklist.py, StoredBlocklist)."""

import threading

import pytest
from conftest import wait_for

from identity.customers.blocklist import Blocklist, StoredBlocklist
from identity.customers.normalise import AllValuesBlocked
from identity.web.schemas import IdentifyRequest


class Table:
    """Stands in for the blocked_value table: counts reads, can hold one up."""

    def __init__(self, values=()):
        self.values, self.reads = list(values), 0
        self.held = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def load(self):
        self.reads += 1
        if not self.release.is_set():
            self.held.set()
            self.release.wait(30)
        return list(self.values)


def stored_blocklist(table: Table, refresh_s: float = 60) -> StoredBlocklist:
    return StoredBlocklist(Blocklist({}), load=table.load, refresh_s=refresh_s)


def test_validation_reads_no_table_even_when_the_snapshot_is_stale():
    table = Table([("email", "blocked@x.io")])
    blocklist = stored_blocklist(table, refresh_s=0)
    schema = IdentifyRequest(blocklist)
    assert schema.load({"email": "blocked@x.io"})["email"] == "blocked@x.io"  # not read yet
    assert table.reads == 0
    blocklist.refresh_if_stale()
    assert table.reads == 1
    with pytest.raises(AllValuesBlocked):
        schema.load({"email": "blocked@x.io"})
    assert table.reads == 1


def test_a_fresh_snapshot_is_not_read_again_until_expired():
    table = Table()
    blocklist = stored_blocklist(table)
    blocklist.refresh_if_stale()
    blocklist.refresh_if_stale()
    assert table.reads == 1
    table.values.append(("phoneNumber", "5550100"))
    blocklist.expire()
    blocklist.refresh_if_stale()
    assert table.reads == 2
    assert blocklist.blocks_phone_number("555-0100", "5550100")


def test_a_request_never_waits_for_another_requests_read():
    table = Table([("email", "old@x.io")])
    blocklist = stored_blocklist(table, refresh_s=0)
    blocklist.refresh_if_stale()
    table.values.append(("email", "new@x.io"))
    table.release.clear()
    reader = threading.Thread(target=blocklist.refresh_if_stale)
    reader.start()
    try:
        wait_for(table.held.is_set, "the first read to be under way")
        blocklist.refresh_if_stale()  # returns at once: the snapshot in hand will do
        assert table.reads == 2
        assert blocklist.blocks_email("old@x.io") and not blocklist.blocks_email("new@x.io")
    finally:
        table.release.set()
        reader.join(30)
    assert blocklist.blocks_email("new@x.io")


def test_a_read_that_began_before_an_expiry_does_not_count_as_fresh():
    table = Table()
    blocklist = stored_blocklist(table)
    table.release.clear()
    reader = threading.Thread(target=blocklist.refresh_if_stale)
    reader.start()
    try:
        wait_for(table.held.is_set, "the read to be under way")
        blocklist.expire()  # this process blocked a value after the read began
    finally:
        table.release.set()
        reader.join(30)
    blocklist.refresh_if_stale()
    assert table.reads == 2


def test_a_value_blocked_by_support_is_refused_by_the_next_checkout(client, db):
    client.post("/identify", json={"email": "spam@x.io", "phoneNumber": "1"})
    detached = client.post("/contacts/1/detach", json={"email": "spam@x.io", "block": True})
    assert detached.status_code == 200, detached.get_json()
    answer = client.post("/identify", json={"email": "spam@x.io"})
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "blocked_values"
