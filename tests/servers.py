"""Real server processes and a small HTTP client, shared by the tests and the benchmark."""

import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from identity.embedded import free_port  # noqa: E402

START_TIMEOUT_S = 30
_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even killed, so no server outlives
    the run that started it. (Linux sends it when the starting thread ends: start servers
    from the main thread.)"""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """A server on a free port of `host` (an IPv4 address, 127.0.0.1 unless given):
    `python wsgi.py` unless `program` says otherwise.

    settings become environment variables (LOG_LEVEL defaults to WARNING); stderr is
    where the server's log goes. A context manager that stops the server on exit."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        program=None,
        stderr=None,
        host: str = "127.0.0.1",
        **settings,
    ):
        self.host = host
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        env = {**os.environ, "HOST": host, "PORT": str(self.port), "LOG_LEVEL": "WARNING"}
        env.update({name: str(value) for name, value in settings.items()})
        if database_url:
            env["DATABASE_URL"] = database_url
        self.process = subprocess.Popen(
            [sys.executable, *(program or [str(PROJECT_ROOT / "wsgi.py")])],
            env=env,
            cwd=PROJECT_ROOT,
            stderr=stderr,
            preexec_fn=_stop_with_parent,
        )
        self.pid = self.process.pid
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("the server exited")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("the server did not start listening") from None
                time.sleep(0.05)

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(START_TIMEOUT_S)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def post_identify(connection: http.client.HTTPConnection, body: dict) -> tuple[int, dict, dict]:
    """POST /identify on an open connection: (status, headers, decoded JSON body)."""
    connection.request("POST", "/identify", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), json.loads(response.read())
