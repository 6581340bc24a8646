"""The parent process of `python wsgi.py`: WORKERS waitress processes on one port.

The supervisor opens the listening socket itself and every worker inherits it: the kernel
hands each new connection to whichever worker accepts first, and a worker accepts only
while no live sibling holds fewer open connections (balance.py). One shared socket rather
than one SO_REUSEPORT socket per worker, because with SO_REUSEPORT the kernel assigns a
connection to one worker's queue as it arrives, and connections queued at a worker that
dies or drains are reset; the shared queue survives any worker, so a replacement or a
sibling picks them up. The port also stays open while a worker restarts.

It restarts a worker that dies (logged, counted in identity_worker_restarts_total), kills
a worker whose main loop has not renewed its heartbeat file for WORKER_TIMEOUT_S (frozen,
stuck: logged, counted in identity_worker_hangs_total) so that it is restarted too, and,
on SIGTERM, closes its copy of the socket and passes SIGTERM to every worker, which then
drains as described in server.py; it exits once all have, 0 if every worker did. SIGINT
(Ctrl-C) stops every worker at once and always ends with status 0. Workers run in a
session of their own, so the terminal's Ctrl-C reaches only the supervisor.

Before any worker starts, every setting is read and checked (identity/config.py) and the
port is opened: a bad value or a busy port ends the start with one line and status 2.

Workers are started as fresh interpreters (`identity.process.server.main`), not forked: the
metrics folder must be in the environment before prometheus-client is imported, and a
fresh process inherits no threads or locks from this one. As root, they run as an
account of their own (worker_account.py); the files they write are made theirs.
"""

import ctypes
import errno
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

from .balance import ConnectionBoard
from .logs import configure_logging
from .server import (
    BOARD_FILE_VARIABLE,
    BOARD_SLOT_VARIABLE,
    HEARTBEAT_FILE_VARIABLE,
    LISTEN_FD_VARIABLE,
    check_waitress_version,
)
from .worker_account import (
    WorkerAccount,
    WorkerAccountError,
    warn_root_workers,
    worker_account,
)

logger = logging.getLogger("identity.process.supervisor")

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.1
_STOP_TIMEOUT_S = 60  # for all workers together; above a worker's drain timeout
# A worker that dies sooner than this after its start is restarted after a growing pause,
# so that a worker that cannot start (a bad setting, say) does not spin the CPU.
_STABLE_AFTER_S = 10
# A worker may take this long from its start to its first heartbeat (WORKER_TIMEOUT_S
# when that is longer): imports and the app's creation come first.
_START_TIMEOUT_S = 60
_MAX_RESTART_PAUSE_S = 10
# At the start, the workers that run first leave the others their share of connections
# for this long at most (balance.py); a replacement worker joins when it is up.
_STARTING_HOLD_S = 10
# A worker: a Ctrl-C passed on while it is still starting is a clean stop, not a traceback.
_WORKER = (
    "import signal, sys\n"
    "try:\n"
    "    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT, signal.SIGTERM])\n"
    "    from identity.process.server import main\n"
    "    main()\n"
    "except KeyboardInterrupt:\n"
    "    sys.exit(0)\n"
)


def _prepare_worker() -> None:
    """Runs in the worker between fork and exec: SIGTERM (drain) if the supervisor dies.
    SIGINT and SIGTERM stay blocked, as _start blocked them (the mask survives exec), until
    _WORKER's code can take them: a Ctrl-C while the interpreter starts would otherwise end
    it with a traceback."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def raise_file_limit() -> None:
    """Every open connection is a file descriptor: allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class StartError(Exception):
    """The server cannot start (a bad setting, a busy port): one line for the operator."""


def listening_socket(settings: dict) -> socket.socket:
    where = f"{settings['HOST']}:{settings['PORT']}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            settings["HOST"], settings["PORT"], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise StartError(
            f"HOST={settings['HOST']!r} is not an address to listen on: {error.strerror}"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(settings["LISTEN_BACKLOG"])
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise StartError(
                f"port {settings['PORT']} is busy: another program listens on {where} (set PORT)"
            ) from None
        raise StartError(f"cannot listen on {where}: {error.strerror}") from None
    sock.set_inheritable(True)
    return sock


class _Slot:
    """One worker position: its index (its slot on the connection board), its current
    process, when it started, and its heartbeat file with the last modification time seen
    there and when (monotonic) it was seen."""

    def __init__(self, index: int, heartbeat: str):
        self.index = index
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.restart_pause = 0.0
        self.restart_at = 0.0
        self.heartbeat = heartbeat
        self.last_beat = 0
        self.beat_seen_at = 0.0
        self.serving = False  # renewed the file at least once
        self.hold_until = 0.0  # its board slot says "starting" until then, or until it serves


class Supervisor:
    def __init__(
        self,
        settings: dict,
        sock: socket.socket,
        restarts,
        hangs,
        run_dir: str,
        account: WorkerAccount | None = None,
    ):
        self.settings, self.sock, self.restarts, self.hangs = settings, sock, restarts, hangs
        self.account = account
        self.slots = [
            _Slot(index, os.path.join(run_dir, f"worker-{index}"))
            for index in range(settings["WORKERS"])
        ]
        self.board_file = os.path.join(run_dir, "connections")
        self.board = ConnectionBoard(
            self.board_file,
            len(self.slots),
            (account.uid, account.gid) if account else None,
        )
        self.stopping: int | None = None  # the signal that stops us, once received

    def _start(self, slot: _Slot) -> None:
        env = {
            **os.environ,
            LISTEN_FD_VARIABLE: str(self.sock.fileno()),
            HEARTBEAT_FILE_VARIABLE: slot.heartbeat,
            BOARD_FILE_VARIABLE: self.board_file,
            BOARD_SLOT_VARIABLE: str(slot.index),
        }
        with open(slot.heartbeat, "w") as heartbeat:
            if self.account:  # renewed by the worker (os.utime): the file must be its own
                os.fchown(heartbeat.fileno(), self.account.uid, self.account.gid)
        slot.last_beat, slot.beat_seen_at = os.stat(slot.heartbeat).st_mtime_ns, time.monotonic()
        slot.serving = False
        # Between fork and exec the child still has our signal handlers: a SIGTERM or
        # SIGINT there would be taken by a handler that exec then discards, and the worker
        # would never stop. Blocked around the start, a signal to us waits until the
        # worker runs, and the worker inherits the mask.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])
        try:
            slot.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER],
                env=env,
                pass_fds=[self.sock.fileno()],
                preexec_fn=_prepare_worker,
                # The terminal's Ctrl-C is for us alone: we pass it on once, when we stop.
                start_new_session=True,
                # As root: the worker's account (preexec_fn runs after the switch, so the
                # parent-death signal, which a change of user clears, stays set).
                **(self.account.popen_options() if self.account else {}),
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
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
        self.board.clear(slot.index)
        slot.hold_until = 0.0
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

    def _hold_if_starting(self, slot: _Slot) -> None:
        """A worker of the first start that does not serve yet is marked as starting on
        the board, for _STARTING_HOLD_S at most; once it serves, it writes its own slot."""
        if not slot.hold_until or slot.process is None:
            return
        if slot.serving:
            slot.hold_until = 0.0
        elif time.monotonic() < slot.hold_until:
            self.board.hold(slot.index)
        else:
            self.board.clear(slot.index)
            slot.hold_until = 0.0

    def _kill_if_hung(self, slot: _Slot) -> None:
        if slot.process is None or slot.process.poll() is not None:
            return
        now = time.monotonic()
        beat = os.stat(slot.heartbeat).st_mtime_ns
        if beat != slot.last_beat:
            slot.last_beat, slot.beat_seen_at, slot.serving = beat, now, True
            return
        silent_s = now - slot.beat_seen_at
        # A worker that has not served yet is still importing and building its app.
        limit = self.settings["WORKER_TIMEOUT_S"]
        if silent_s > (limit if slot.serving else max(limit, _START_TIMEOUT_S)):
            logger.error(
                "worker stopped answering; killing it to replace it",
                extra={"pid": slot.process.pid, "silent_s": round(silent_s, 1)},
            )
            self.hangs.inc()
            slot.process.kill()  # even a stopped process dies; the next pass replaces it

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
            slot.hold_until = time.monotonic() + _STARTING_HOLD_S
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
                self._kill_if_hung(slot)
                self._hold_if_starting(slot)
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
        # Ctrl-C is how a person stops the server: whatever the workers did, a normal end.
        return 0 if clean or self.stopping == signal.SIGINT else 1


def main() -> int:
    """Serve until stopped: 0 after SIGTERM's drain or a Ctrl-C; 2, with one line on
    standard error, when a setting or the port stops the start, before any worker runs."""
    try:
        return _serve()
    except (config.ConfigError, StartError, WorkerAccountError) as error:
        print(f"identity: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the signal handlers are in place: nothing to stop
        return 0


def _serve() -> int:
    check_waitress_version()
    settings = config.from_environment()
    configure_logging(settings["LOG_LEVEL"])
    try:
        access.log_configuration(settings)  # checks the tokens
    except ValueError as error:  # the message names the setting and the token's position
        raise StartError(str(error)) from None
    raise_file_limit()
    # Before the port opens: the check runs as a child of ours, and once clients can
    # connect every child should be a worker.
    account, root_workers = worker_account(settings["WORKER_USER"])
    sock = listening_socket(settings)
    if root_workers:  # after the port: a busy port stays one line, with no warning before
        warn_root_workers(root_workers)
    # A fresh, private folder for the workers' heartbeat files and, in it, for their metric
    # files: nothing left from an earlier run is ever summed in.
    run_dir = tempfile.mkdtemp(prefix="identity-workers-")
    metrics_dir = os.path.join(run_dir, "metrics")
    os.mkdir(metrics_dir, 0o700)
    if account:
        _share_with_workers(run_dir, metrics_dir, account)
    # Set before prometheus-client is imported, here and in workers.
    os.environ[MULTIPROCESS_DIR_VARIABLE] = metrics_dir
    try:
        # Our own metric files are opened now, before any worker can touch the folder.
        from identity.web.metrics import worker_hangs, worker_restarts

        return Supervisor(
            settings, sock, worker_restarts(), worker_hangs(), run_dir, account
        ).run()
    finally:
        sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def _share_with_workers(run_dir: str, metrics_dir: str, account: WorkerAccount) -> None:
    """The workers' account may enter our folder (nobody else may) and owns the metrics
    folder, where each worker writes its files. The run folder stays ours: the workers
    cannot put a link where we write a heartbeat file."""
    os.chown(run_dir, -1, account.gid)
    os.chmod(run_dir, 0o710)
    os.chown(metrics_dir, account.uid, account.gid)
