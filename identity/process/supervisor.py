"""The parent process of `python wsgi.py`: WORKERS waitress processes on one port.

The supervisor opens the listening socket itself and every worker inherits it: the kernel
hands each new connection to whichever worker accepts first. One shared socket rather
than one SO_REUSEPORT socket per worker, because with SO_REUSEPORT the kernel assigns a
connection to one worker's queue as it arrives, and connections queued at a worker that
dies or drains are reset; the shared queue survives any worker, so a replacement or a
sibling picks them up. The port also stays open while a worker restarts.

It restarts a worker that dies (logged, counted in identity_worker_restarts_total) and,
on SIGTERM, closes its copy of the socket and passes SIGTERM to every worker, which then
drains as described in server.py; it exits once all have, 0 if every worker did. SIGINT
(Ctrl-C) stops every worker at once.

Workers are started as fresh interpreters (`identity.process.server.main`), not forked: the
metrics folder must be in the environment before prometheus-client is imported, and a
fresh process inherits no threads or locks from this one.
"""

import ctypes
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from prometheus_client import multiprocess

from identity import config
from identity.web import access
from identity.web.metrics import MULTIPROCESS_DIR_VARIABLE

from .logs import configure_logging
from .server import LISTEN_FD_VARIABLE, check_waitress_version

logger = logging.getLogger("identity.process.supervisor")

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.1
_STOP_TIMEOUT_S = 60  # for all workers together; above a worker's drain timeout
# A worker that dies sooner than this after its start is restarted after a growing pause,
# so that a worker that cannot start (a bad setting, say) does not spin the CPU.
_STABLE_AFTER_S = 10
_MAX_RESTART_PAUSE_S = 10


def _die_with_parent() -> None:
    """Runs in the worker between fork and exec: SIGTERM (drain) if the supervisor dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def raise_file_limit() -> None:
    """Every open connection is a file descriptor: allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listening_socket(settings: dict) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        settings["HOST"], settings["PORT"], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(settings["LISTEN_BACKLOG"])
    sock.set_inheritable(True)
    return sock


class _Slot:
    """One worker position: its current process and when it started."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.restart_pause = 0.0
        self.restart_at = 0.0


class Supervisor:
    def __init__(self, settings: dict, sock: socket.socket, restarts):
        self.settings, self.sock, self.restarts = settings, sock, restarts
        self.slots = [_Slot() for _ in range(settings["WORKERS"])]
        self.stopping: int | None = None  # the signal that stops us, once received

    def _start(self, slot: _Slot) -> None:
        env = {**os.environ, LISTEN_FD_VARIABLE: str(self.sock.fileno())}
        slot.process = subprocess.Popen(
            [sys.executable, "-c", "from identity.process.server import main; main()"],
            env=env,
            pass_fds=[self.sock.fileno()],
            preexec_fn=_die_with_parent,
        )
        slot.started = time.monotonic()
        logger.info("worker started", extra={"pid": slot.process.pid})

    def _replace_if_dead(self, slot: _Slot) -> None:
        now = time.monotonic()
        if slot.process is None:
            if now >= slot.restart_at:
                self._start(slot)
            return
        status = slot.process.poll()
        if status is None:
            return
        self._forget(slot.process.pid)
        logger.error(
            "worker exited unexpectedly; replacing it",
            extra={"pid": slot.process.pid, "status": status},
        )
        self.restarts.inc()
        lived = now - slot.started
        slot.restart_pause = (
            0.0
            if lived > _STABLE_AFTER_S
            else min(_MAX_RESTART_PAUSE_S, slot.restart_pause * 2 or 0.1)
        )
        slot.process, slot.restart_at = None, now + slot.restart_pause

    @staticmethod
    def _forget(pid: int) -> None:
        # A dead worker's gauges (requests in flight, connections in use) no longer count.
        multiprocess.mark_process_dead(pid)

    def _on_signal(self, signum, _frame) -> None:
        if self.stopping is None:
            self.stopping = signum

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for slot in self.slots:
            self._start(slot)
        logger.info(
            "serving",
            extra={
                "url": f"http://{self.settings['HOST']}:{self.settings['PORT']}",
                "workers": len(self.slots),
                "threads_per_worker": self.settings["THREADS"],
            },
        )
        while self.stopping is None:
            for slot in self.slots:
                self._replace_if_dead(slot)
            time.sleep(_POLL_S)
        return self._stop(self.stopping)

    def _stop(self, signum: int) -> int:
        """Pass the signal on, then wait for every worker: SIGTERM drains, SIGINT stops."""
        logger.info("stopping workers", extra={"signal": signal.Signals(signum).name})
        self.sock.close()  # the port closes when the last worker closes its copy too
        workers = [slot.process for slot in self.slots if slot.process is not None]
        for process in workers:
            if process.poll() is None:
                process.send_signal(signum)
        # A worker stopped by the signal itself had not begun to serve: nothing was lost.
        clean_exits = {0, -signum}
        clean, deadline = True, time.monotonic() + _STOP_TIMEOUT_S
        for process in workers:
            try:
                status: int | str = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                status = "killed after the stop timeout"
            if status not in clean_exits:
                logger.warning(
                    "worker did not stop cleanly", extra={"pid": process.pid, "status": status}
                )
                clean = False
        logger.info("stopped")
        return 0 if clean else 1


def main() -> int:
    check_waitress_version()
    settings = config.from_environment()
    configure_logging(settings["LOG_LEVEL"])
    access.log_configuration(settings)
    raise_file_limit()
    # A fresh, private folder for the workers' metric files: nothing left from an earlier
    # run is ever summed in. Set before prometheus-client is imported, here and in workers.
    metrics_dir = tempfile.mkdtemp(prefix="identity-metrics-")
    os.environ[MULTIPROCESS_DIR_VARIABLE] = metrics_dir
    try:
        from identity.web.metrics import worker_restarts

        sock = listening_socket(settings)
        return Supervisor(settings, sock, worker_restarts()).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
