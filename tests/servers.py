"""Real server processes and a small HTTP client, shared by the tests and the benchmark."""

import collections
import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from identity.config import default_workers  # noqa: E402
from identity.dev.embedded import free_port  # noqa: E402

START_TIMEOUT_S = 30
# The supervisor kills a worker that has not drained 30 s after SIGTERM (process/supervisor.py).
DRAIN_WARNING_S = 20
_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even killed, so no server outlives
    the run that started it. (Linux sends it when the starting thread ends: start servers
    from the main thread.)"""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """A server on a free port of `host` (an IPv4 address, 127.0.0.1 unless given):
    `python wsgi.py` unless `program` says otherwise, with our interpreter unless
    `interpreter` names another.

    settings become environment variables (LOG_LEVEL defaults to WARNING); stderr is
    where the server's log goes. A context manager that stops the server on exit."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        program=None,
        interpreter: str = sys.executable,
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
        self.workers = int(env.get("WORKERS", default_workers()))
        self.process = subprocess.Popen(
            [interpreter, *(program or [str(PROJECT_ROOT / "wsgi.py")])],
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
        """SIGTERM, and the supervisor's exit status once its workers have drained.

        A stop still running after DRAIN_WARNING_S is reported as a warning with the
        threads of the supervisor and its workers (py-spy). A server still running once
        the supervisor's own stop timeout has passed is killed, with a second warning: a
        test about something else reports a stop that hangs (docs/deployment.md, "How a
        drain ends"), and does not fail on it."""
        self.process.terminate()
        try:
            return self.process.wait(DRAIN_WARNING_S)
        except subprocess.TimeoutExpired:
            stacks = self._worker_stacks()
            warnings.warn(f"a drain took over {DRAIN_WARNING_S} s:\n{stacks}", stacklevel=2)
        try:
            return self.process.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            warnings.warn("the server did not stop after SIGTERM: killed", stacklevel=2)
            for pid in self.worker_pids():
                os.kill(pid, signal.SIGKILL)
            self.process.kill()
            return self.process.wait()

    def _worker_stacks(self) -> str:
        py_spy = Path(sys.executable).with_name("py-spy")
        dumps = [
            subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True)
            for pid in [self.pid, *self.worker_pids()]
        ]
        return "\n".join(dump.stdout + dump.stderr for dump in dumps)

    def worker_pids(self) -> list[int]:
        """The supervisor's worker processes now (`python wsgi.py` starts WORKERS)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except FileNotFoundError:  # the supervisor has exited
            return []

    def wait_for_workers(self, count: int) -> list[int]:
        """Wait until `count` worker processes run; returns their pids."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(pids := self.worker_pids()) != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} workers did not start")
            time.sleep(0.05)
        return pids

    def cpu_seconds(self) -> float:
        """CPU time used so far by the supervisor and its live workers."""
        return sum(process_cpu_seconds(pid) for pid in [self.pid, *self.worker_pids()])

    def serving_pid(self, connection: socket.socket) -> int:
        """The worker that accepted this client connection (waiting for the accept)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            # A connection still waiting to be accepted has no inode yet (0).
            inode = _server_side_inode(self.port, connection.getsockname()[1])
            for pid in self.worker_pids():
                if inode in _socket_inodes(pid):
                    return pid
            time.sleep(0.01)
        raise LookupError("no worker accepted this connection")

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time of one process, from /proc (0 once it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _server_side_inode(server_port: int, client_port: int) -> str:
    """The inode of the accepted socket whose local port is the server's and peer the client's."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if local_port == server_port and remote_port == client_port:
            return fields[9]
    raise LookupError("no such connection")


def connections_per_worker(service: ServerProcess, count: int) -> list[int]:
    """How `count` connections opened at once spread over the workers, most loaded first.

    Keep-alive connections stay with the worker that accepted them, so this is how the
    load of the measurement that follows is shared."""
    sockets = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(count)]
    try:
        accepted_by = collections.Counter(service.serving_pid(sock) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()
    return sorted(accepted_by.values(), reverse=True) + [0] * (service.workers - len(accepted_by))


def answer_from_every_worker(
    server: ServerProcess, workers: list[int] | None = None, headers: dict | None = None
):
    """New checkouts on fresh connections until each worker has answered one (and so has
    opened its database connections); returns (checkouts sent, pids that answered).
    headers: sent with each, as a proxy's X-Forwarded-For to a server that trusts one."""
    workers = workers or server.wait_for_workers(server.workers)
    answered, sent = set(), 0
    while answered != set(workers):
        assert sent < 500, f"only {answered} of {workers} ever answered"
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=START_TIMEOUT_S)
        connection.connect()
        body = {"email": f"warm.{sent}.{server.port}@x.io"}
        status = post_identify(connection, body, headers)[0]
        assert status == 200
        answered.add(server.serving_pid(connection.sock))
        connection.close()
        sent += 1
    return sent, answered


def post_identify(
    connection: http.client.HTTPConnection, body: dict, headers: dict | None = None
) -> tuple[int, dict, dict]:
    """POST /identify on an open connection: (status, headers, decoded JSON body)."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    connection.request("POST", "/identify", json.dumps(body), sent)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), json.loads(response.read())
