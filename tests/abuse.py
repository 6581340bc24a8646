"""Slow clients and a well-behaved one, shared by test_limits.py and test_proxy.py."""

import http.client
import json
import resource
import socket
import threading
import time

# Never a complete header: the request line and then one endless header line.
_TRICKLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000


def allow_open_files(count: int) -> None:
    """Raise this process's soft limit on file descriptors to at least `count`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(count, hard), hard))


class Trickle:
    """`count` connections that each send a request header one byte a second.

    Runs in a thread for `seconds`; counts the connections the server closed."""

    def __init__(self, host: str, port: int, count: int, seconds: float):
        allow_open_files(count + 1000)
        self.sockets = []
        for _ in range(count):
            sock = socket.create_connection((host, port), timeout=10)
            sock.setblocking(False)
            self.sockets.append(sock)
        self.seconds, self.closed_by_server = seconds, 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        for second in range(int(self.seconds)):
            open_sockets = []
            for sock in self.sockets:
                try:
                    sock.send(_TRICKLED[second : second + 1])
                    open_sockets.append(sock)
                except OSError:  # reset or closed by the server
                    self.closed_by_server += 1
                    sock.close()
            self.sockets = open_sockets
            time.sleep(max(0.0, started + second + 1 - time.monotonic()))

    def wait(self) -> None:
        self.thread.join()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


class WellBehavedClient:
    """Every half second, a POST /identify and a GET /healthz, each on a new connection;
    records (route, status or the exception's name, seconds) for each."""

    def __init__(self, host: str, port: int, timeout_s: float = 10):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.results: list[tuple[str, object, float]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _request(self, method: str, path: str, body: dict | None = None) -> None:
        started = time.monotonic()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            payload = json.dumps(body) if body is not None else None
            connection.request(method, path, payload, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            status: object = response.status
        except OSError as error:
            status = type(error).__name__
        finally:
            connection.close()
        self.results.append((f"{method} {path}", status, time.monotonic() - started))

    def _run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            tick = time.monotonic()
            self._request("POST", "/identify", {"email": f"polite{n}@x.io"})
            self._request("GET", "/healthz")
            self.stopping.wait(max(0.0, tick + 0.5 - time.monotonic()))

    def stop(self) -> list[tuple[str, object, float]]:
        self.stopping.set()
        self.thread.join(self.timeout_s * 3)
        return self.results

    def summary(self) -> str:
        lines = []
        for route in ("POST /identify", "GET /healthz"):
            times = sorted(seconds * 1000 for name, _, seconds in self.results if name == route)
            if times:
                lines.append(
                    f"{route}: {len(times)} requests, p50 {times[len(times) // 2]:.1f} ms, "
                    f"p99 {times[min(len(times) - 1, int(len(times) * 0.99))]:.1f} ms, "
                    f"max {times[-1]:.1f} ms"
                )
        return "; ".join(lines)
