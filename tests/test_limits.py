"""Limits that hold against slow and hostile clients, with the service alone (no proxy).

- 1,000 connections trickling a request header one byte a second for 20 s do not stop a
  well-behaved client: its POST /identify and GET /healthz, every half second, each answer
  within 2 s (default settings).
- A trickling connection holds no thread: one thread still serves others.
- Idle connections are closed after IDLE_TIMEOUT_S; a request that has not arrived whole
  within REQUEST_TIMEOUT_S of its first byte has its connection closed.
- A header over MAX_HEADER_BYTES gets a 431, a body announced over MAX_BODY_BYTES a 413
  before it is sent, a malformed request a 400: each in the JSON error shape, never a hang.
"""

import json
import socket
import time

import pytest
from abuse import Trickle, WellBehavedClient
from servers import ServerProcess, answer_from_every_worker

TRICKLING_CONNECTIONS = 1000
TRICKLE_S = 20
ANSWER_BOUND_S = 2
NO_HANG_S = 10  # a refusal comes long before this, or the test fails


def test_trickling_connections_do_not_stop_a_well_behaved_client(db, database_url):
    with ServerProcess(database_url) as server:  # every limit at its default
        answer_from_every_worker(server)  # each worker has its database connections
        trickle = Trickle("127.0.0.1", server.port, TRICKLING_CONNECTIONS, TRICKLE_S)
        client = WellBehavedClient("127.0.0.1", server.port)
        trickle.wait()
        results = client.stop()
        trickle.close()
    print(
        f"\n{TRICKLING_CONNECTIONS} trickling connections for {TRICKLE_S} s "
        f"({trickle.closed_by_server} closed by the server): {client.summary()}"
    )
    assert len(results) >= TRICKLE_S * 2  # a request of each kind every half second
    assert {status for _, status, _ in results} == {200}, results
    assert max(seconds for _, _, seconds in results) < ANSWER_BOUND_S, client.summary()


@pytest.fixture(scope="module")
def short_timeouts(database_url):
    """One worker, one thread, and timeouts short enough to wait for."""
    with ServerProcess(
        database_url, WORKERS=1, THREADS=1, IDLE_TIMEOUT_S=2, REQUEST_TIMEOUT_S=3
    ) as server:
        yield server


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=NO_HANG_S * 2)


def seconds_until_closed(sock: socket.socket, trickle_every_s: float | None = None) -> float:
    """Wait for the server to close the connection, trickling a header byte meanwhile."""
    started = time.monotonic()
    sock.settimeout(trickle_every_s or NO_HANG_S * 2)
    while True:
        try:
            if sock.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            assert time.monotonic() - started < NO_HANG_S * 2, "never closed"
            sock.send(b"a")
        except ConnectionResetError:
            return time.monotonic() - started


def test_a_trickling_connection_holds_no_thread(short_timeouts):
    slow = [connect(short_timeouts) for _ in range(20)]
    for sock in slow:
        sock.sendall(b"POST /identify HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20\r\n\r\n{")
    with connect(short_timeouts) as sock:  # the only thread is free for this one
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    for sock in slow:
        sock.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout(short_timeouts):
    with connect(short_timeouts) as sock:
        assert 1.9 <= seconds_until_closed(sock) < NO_HANG_S


def test_a_connection_idle_after_a_request_is_closed_after_the_idle_timeout(short_timeouts):
    with connect(short_timeouts) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        assert 1.9 <= seconds_until_closed(sock) < NO_HANG_S


def test_a_trickled_request_is_cut_off_after_the_request_timeout(short_timeouts):
    with connect(short_timeouts) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        # A byte every 0.3 s is never idle for IDLE_TIMEOUT_S, but the request never ends.
        assert 2.9 <= seconds_until_closed(sock, trickle_every_s=0.3) < NO_HANG_S


def status_and_error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    return int(head[9:12]), json.loads(body)["error"]


def read_answer(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_a_header_over_the_limit_gets_431(short_timeouts):
    with connect(short_timeouts) as sock:
        sock.settimeout(NO_HANG_S)
        header = b"X-Big: " + b"a" * (17 * 1024) + b"\r\n"  # MAX_HEADER_BYTES is 16 KiB
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + header + b"\r\n")
        try:
            answer = read_answer(sock)
        except ConnectionResetError:
            # Closing a socket with unread bytes resets it, which may discard the answer
            # on its way: a clean refusal all the same, and no hang.
            return
        status, error = status_and_error(answer)
    assert status == 431 and error["code"] == "header_too_large"


@pytest.mark.parametrize("length", [64 * 1024 + 1, 5_000_000])  # MAX_BODY_BYTES + 1, 5 MB
def test_the_413_arrives_before_the_body_is_sent(short_timeouts, length):
    with connect(short_timeouts) as sock:
        sock.settimeout(NO_HANG_S)
        sock.sendall(
            b"POST /identify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % length
        )  # and not one byte of the body
        status, error = status_and_error(read_answer(sock))
    assert status == 413 and error["code"] == "payload_too_large"


def test_a_body_of_max_body_bytes_is_accepted(short_timeouts):
    body = b'{"email": "limit@x.io"}'
    body += b" " * (64 * 1024 - len(body))  # exactly MAX_BODY_BYTES
    with connect(short_timeouts) as sock:
        sock.settimeout(NO_HANG_S)
        sock.sendall(
            b"POST /identify HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        assert read_answer(sock).startswith(b"HTTP/1.1 200")


def test_a_malformed_request_gets_a_json_400(short_timeouts):
    with connect(short_timeouts) as sock:
        sock.settimeout(NO_HANG_S)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: many\r\n\r\n")
        status, error = status_and_error(read_answer(sock))
    assert status == 400 and error["code"] == "bad_request"
