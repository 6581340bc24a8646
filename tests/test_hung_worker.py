"""A worker that stops answering is replaced, as process managers do: each worker's main
loop renews a heartbeat file every second; the supervisor kills a worker whose file stays
unchanged for WORKER_TIMEOUT_S once it has served (60 s at most before its first
heartbeat, for its start), logs it, counts it and starts another."""

import os
import signal
import tempfile

from conftest import wait_for
from servers import ServerProcess, answer_from_every_worker
from test_workers import sample, scrape


def test_a_frozen_worker_is_killed_replaced_logged_and_counted(db, database_url):
    with tempfile.TemporaryFile() as log:
        with ServerProcess(database_url, WORKERS=2, WORKER_TIMEOUT_S=2, stderr=log) as server:
            frozen, survivor = server.wait_for_workers(2)
            answer_from_every_worker(server, [frozen, survivor])  # both serve: past the start
            os.kill(frozen, signal.SIGSTOP)  # alive, but answers nothing
            wait_for(lambda: frozen not in server.worker_pids(), "the frozen worker's end")
            wait_for(lambda: len(server.worker_pids()) == 2, "a replacement worker")
            replacement = (set(server.worker_pids()) - {survivor}).pop()
            _, answered = answer_from_every_worker(server, [survivor, replacement])
            assert answered == {survivor, replacement}
            metrics = scrape(server)
            assert sample(metrics, "identity_worker_hangs_total") == 1
            assert sample(metrics, "identity_worker_restarts_total") == 1
        log.seek(0)
        assert b"worker stopped answering; killing it to replace it" in log.read()


def test_a_worker_that_keeps_answering_is_left_alone(db, database_url):
    with ServerProcess(database_url, WORKERS=1, WORKER_TIMEOUT_S=1) as server:
        (worker,) = server.wait_for_workers(1)
        heartbeat = _heartbeat_file(worker)
        beats = set()

        def four_heartbeats() -> bool:
            beats.add(os.stat(heartbeat).st_mtime_ns)
            return len(beats) >= 4

        # Several timeouts' worth of an idle worker: its loop renews the file meanwhile.
        wait_for(four_heartbeats, "four heartbeats")
        assert server.worker_pids() == [worker]
        assert sample(scrape(server), "identity_worker_hangs_total") == 0


def _heartbeat_file(worker: int) -> str:
    """The worker's heartbeat file, from its environment, once it has one: a worker seen
    between fork and exec still shows the supervisor's environment."""
    paths: list[bytes] = []

    def named() -> bool:
        with open(f"/proc/{worker}/environ", "rb") as environ:
            entries = environ.read().split(b"\0")
        paths[:] = [
            entry.split(b"=", 1)[1]
            for entry in entries
            if entry.startswith(b"IDENTITY_HEARTBEAT_FILE=")
        ]
        return bool(paths)

    wait_for(named, "the worker's own environment")
    return paths[0].decode()
