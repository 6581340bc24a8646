"""HTTP clients for the load, and a webhook receiver that counts what it is sent."""

import http.client
import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Client:
    """One keep-alive connection to the service, made again after any failure."""

    def __init__(self, port: int, timeout_s: float = 30):
        self.port, self.timeout_s = port, timeout_s
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None):
        """(status, headers, decoded body); status None when no answer came."""
        if self.connection is None:
            self.connection = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout_s
            )
        try:
            payload = json.dumps(body) if body is not None else None
            self.connection.request(method, path, payload, {"Content-Type": "application/json"})
            response = self.connection.getresponse()
            return (
                response.status,
                dict(response.getheaders()),
                json.loads(response.read() or b"null"),
            )
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = None
            return None, {}, None

    def close(self) -> None:
        if self.connection:
            self.connection.close()


def racing_checkouts(count: int, seed: int, values: int = 150) -> list[dict]:
    """Checkouts drawn from few values, so that concurrent ones link and merge the same
    customers: new customers, new secondaries, merges of two primaries."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        email = f"race{rng.randrange(values)}@x.io"
        phone = str(100000 + rng.randrange(values))
        shape = rng.random()
        body = (
            {"email": email}
            if shape < 0.1
            else {"phoneNumber": phone}
            if shape < 0.2
            else {"email": email, "phoneNumber": phone}
        )
        bodies.append(body)
    return bodies


def feed_ids(client: Client, cursor: str | None = None, limit: int = 100):
    """Follow `next` from cursor until a page comes back empty: (event ids, cursor)."""
    ids: list[int] = []
    while True:
        path = f"/events?limit={limit}" + (f"&after={cursor}" if cursor else "")
        status, _, page = client.request("GET", path)
        assert status == 200, (status, page)
        if not page["events"]:
            return ids, cursor
        ids += [event["id"] for event in page["events"]]
        cursor = page["next"]


class Receiver:
    """A webhook endpoint on 127.0.0.1 that answers 200 and counts every event it is
    sent, and how many requests it ever had in flight at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.deliveries: Counter[int] = Counter()
        self.in_flight = self.most_in_flight = self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.take(json.loads(body)["events"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/identity"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, events: list[dict]) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(0.002)  # long enough for a second deliverer's request to overlap
        with self.lock:
            self.deliveries.update(event["id"] for event in events)
            self.in_flight -= 1

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
