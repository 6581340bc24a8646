"""Feed long polls against real server processes (docs/feed.md).

- A long poll may wait longer than the request deadline (REQUEST_DEADLINE_S, 5 s): each
  read of the feed has a deadline of its own.
- Long polls wait on threads of their own (LONG_POLLS per worker, beyond THREADS): while
  they wait, checkouts are answered; one long poll more than LONG_POLLS gets a 429.
"""

import http.client
import json
import threading
from urllib.parse import urlencode

import pytest
from conftest import wait_for
from servers import ServerProcess

THREADS = 4
LONG_POLLS = 4
EXTRA_POLLS = 2
CHECKOUTS = 20
LONG_WAIT_S = 30  # far longer than the checkouts take: they end first, or the test fails


@pytest.fixture(scope="module")
def server(database_url):
    with ServerProcess(database_url, WORKERS=1, THREADS=THREADS, LONG_POLLS=LONG_POLLS) as server:
        yield server


def call(server, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2 * LONG_WAIT_S)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        payload = json.dumps(body) if body is not None else None
        connection.request(method, path, body=payload, headers=headers)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def read_feed(server, after: str | None = None, wait: float = 0) -> tuple[int, dict]:
    query = {"wait": wait, **({"after": after} if after else {})}
    return call(server, "GET", f"/events?{urlencode(query)}")


def end_of_feed(server) -> str:
    status, page = read_feed(server)
    assert status == 200, page
    while page["events"]:
        status, page = read_feed(server, page["next"])
    return page["next"]


class LongPoll(threading.Thread):
    def __init__(self, server, after: str):
        super().__init__(daemon=True)
        self.server, self.after, self.answer = server, after, None
        self.start()

    def run(self):
        self.answer = read_feed(self.server, self.after, wait=LONG_WAIT_S)


def test_a_long_poll_longer_than_the_request_deadline_answers_empty(db, server):
    cursor = end_of_feed(server)
    status, page = read_feed(server, cursor, wait=6)
    assert (status, page) == (200, {"events": [], "next": cursor})


def test_checkouts_are_answered_while_long_polls_wait(db, server):
    known = {"email": "known@shop.test", "phoneNumber": "5550100"}
    status, answer = call(server, "POST", "/identify", known)
    assert status == 200, answer
    primary_id = answer["contact"]["primaryContactId"]
    cursor = end_of_feed(server)

    polls = [LongPoll(server, cursor) for _ in range(LONG_POLLS + EXTRA_POLLS)]
    refused = lambda: [poll for poll in polls if poll.answer]  # noqa: E731
    # The polls beyond LONG_POLLS are refused at once; the others wait for an event.
    wait_for(lambda: len(refused()) >= EXTRA_POLLS, "the extra long polls to be refused")
    for poll in refused():
        status, error = poll.answer
        assert (status, error["error"]["code"]) == (429, "too_many_long_polls")
    waiting = [poll for poll in polls if poll not in refused()]
    assert len(waiting) == LONG_POLLS

    for _ in range(CHECKOUTS):  # repeats: they change nothing, so no event wakes the polls
        status, answer = call(server, "POST", "/identify", known)
        assert (status, answer["contact"]["primaryContactId"]) == (200, primary_id)
    assert [poll.answer for poll in waiting] == [None] * LONG_POLLS  # still waiting

    status, answer = call(server, "POST", "/identify", {"email": "new@shop.test"})
    assert status == 200, answer
    for poll in waiting:
        poll.join(2 * LONG_WAIT_S)
        status, page = poll.answer
        assert status == 200, page
        assert [(event["kind"], event["primaryContactId"]) for event in page["events"]] == [
            ("customer_created", answer["contact"]["primaryContactId"])
        ]
