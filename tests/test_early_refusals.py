"""Early refusals reach clients that send everything before they read (RFC 9112 §9.6).

A body over MAX_BODY_BYTES is refused with a 413 as soon as its header has arrived,
while the client is still sending it; a header over MAX_HEADER_BYTES likewise with a 431.
Python's http.client and requests send the whole request before they read: without a
lingering close the server closed the socket with unread bytes, and the kernel's reset
destroyed the answer in a third of the tries.
"""

import http.client
import json
import socket

import pytest
from servers import ServerProcess

TRIES = 50
NO_HANG_S = 30  # a refusal comes long before this, or the test fails


@pytest.fixture(scope="module")
def server(database_url):
    with ServerProcess(database_url, WORKERS=1) as server:
        yield server


def refusal(connection: http.client.HTTPConnection) -> tuple[int, str]:
    answer = connection.getresponse()
    assert answer.getheader("Content-Type") == "application/json"
    return answer.status, json.loads(answer.read())["error"]["code"]


def test_every_client_that_sends_a_2_mb_body_before_reading_gets_the_413(server):
    body = b'{"email": "' + b"a" * 2_000_000 + b'@x.io"}'
    outcomes = []
    for _ in range(TRIES):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=NO_HANG_S)
        try:
            connection.request(
                "POST", "/identify", body=body, headers={"Content-Type": "application/json"}
            )
            outcomes.append(refusal(connection))
        except ConnectionError as error:  # a reset: the answer was destroyed
            outcomes.append(type(error).__name__)
        finally:
            connection.close()
    assert outcomes == [(413, "payload_too_large")] * TRIES, outcomes


def test_every_client_that_sends_a_huge_header_before_reading_gets_the_431(server):
    request = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-Big-%d: %s\r\n" % (n, b"a" * 1000) for n in range(500))
        + b"\r\n"
    )  # 500 KB of header; MAX_HEADER_BYTES is 16 KiB
    outcomes = []
    for _ in range(TRIES):
        with socket.create_connection(("127.0.0.1", server.port), timeout=NO_HANG_S) as sock:
            try:
                sock.sendall(request)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionError as error:
                outcomes.append(type(error).__name__)
                continue
        head, _, error_body = answer.partition(b"\r\n\r\n")
        outcomes.append((int(head[9:12]), json.loads(error_body)["error"]["code"]))
    assert outcomes == [(431, "header_too_large")] * TRIES, outcomes


def test_a_lingering_connection_is_closed_once_the_client_has_sent_everything(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=NO_HANG_S) as sock:
        sock.sendall(
            b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n" + b" " * 100_000
        )
        sock.shutdown(socket.SHUT_WR)  # all sent: the server's linger ends at our FIN
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")
