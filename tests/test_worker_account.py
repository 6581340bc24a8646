"""As root, the supervisor keeps root and the web workers run as an account of their own
(identity/process/worker_account.py): never root, `nobody` or the embedded PostgreSQL's
account, and the files they write (metrics, heartbeats) are theirs. Tests of the root
case; as any other user the workers run as the tests do."""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
from conftest import wait_for
from servers import PROJECT_ROOT, ServerProcess, answer_from_every_worker
from test_workers import sample, scrape

from identity.dev.embedded import free_port
from identity.process.worker_account import (
    DEFAULT_ACCOUNT,
    WorkerAccount,
    account_named,
    cannot_start_workers,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the workers drop root only as root")


def _ids(pid: int) -> dict[str, list[int]]:
    """The Uid, Gid and Groups lines of /proc/<pid>/status (real, effective, saved, fs)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        key: [int(value) for value in rest.split()]
        for key, _, rest in (line.partition(":") for line in lines)
        if key in ("Uid", "Gid", "Groups")
    }


def _interpreter_for(account: WorkerAccount) -> tuple[str, dict]:
    """An interpreter the account can run, with the environment it needs: ours, or, when
    ours is closed to it (pyenv under /root), the system's python3 of the same version
    with our packages on PYTHONPATH."""
    ours = (sys.executable, {})
    path = os.pathsep.join([str(PROJECT_ROOT), sysconfig.get_paths()["purelib"]])
    system = (shutil.which("python3", path="/usr/local/bin:/usr/bin"), {"PYTHONPATH": path})
    for interpreter, extra in (ours, system):
        if interpreter and not cannot_start_workers(account, interpreter, {**os.environ, **extra}):
            return interpreter, extra
    pytest.skip(f"no interpreter of Python {sys.version_info[:2]} that {account.name} can run")


def test_workers_run_as_their_own_account_and_write_their_metrics(db, database_url):
    account = account_named(DEFAULT_ACCOUNT)
    interpreter, extra = _interpreter_for(account)
    with ServerProcess(database_url, interpreter=interpreter, WORKERS=2, **extra) as server:
        workers = server.wait_for_workers(2)
        sent, _ = answer_from_every_worker(server, workers)  # each has written its metrics
        assert _ids(server.pid)["Uid"] == [0, 0, 0, 0]  # the supervisor keeps root
        for worker in workers:
            ids = _ids(worker)
            assert ids["Uid"] == [account.uid] * 4
            assert ids["Gid"] == [account.gid] * 4
            assert ids["Groups"] == []  # none of root's groups
        metrics = scrape(server)
        served = sample(
            metrics,
            "identity_http_request_duration_seconds_count",
            method="POST",
            route="/identify",
            status="200",
        )
        assert served == sent  # both workers' files summed, as their own account wrote them
        assert "identity_worker_restarts_total 0.0" in metrics  # the supervisor's file too
        heartbeat = _environment(workers[0])["IDENTITY_HEARTBEAT_FILE"]
        metrics_dir = Path(_environment(workers[0])["PROMETHEUS_MULTIPROC_DIR"])
        assert os.stat(heartbeat).st_uid == account.uid
        assert os.stat(metrics_dir).st_uid == account.uid
        assert os.stat(metrics_dir).st_mode & 0o077 == 0  # nobody else reads them
        assert os.stat(metrics_dir.parent).st_mode & 0o007 == 0
        first_beat = os.stat(heartbeat).st_mtime_ns
        # The worker renews its own heartbeat file: the supervisor does not kill it.
        wait_for(lambda: os.stat(heartbeat).st_mtime_ns != first_beat, "a renewed heartbeat")
        assert server.worker_pids() == workers


def _environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)


@pytest.mark.parametrize("name", ["root", "nobody", "identity-pg"])
def test_a_shared_account_or_the_databases_is_refused(name):
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "wsgi.py")],
        env={**os.environ, "PORT": str(free_port()), "WORKER_USER": name},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"WORKER_USER={name} is not allowed" in result.stderr


def test_when_our_interpreter_is_closed_to_the_account_the_default_warns_and_keeps_root(
    db, database_url
):
    account = account_named(DEFAULT_ACCOUNT)
    if not cannot_start_workers(account):
        pytest.skip(f"{account.name} can run {sys.executable}")
    with tempfile.TemporaryFile() as log:
        with ServerProcess(database_url, WORKERS=1, LOG_LEVEL="INFO", stderr=log) as server:
            (worker,) = server.wait_for_workers(1)
            answer_from_every_worker(server, [worker])
            assert _ids(worker)["Uid"] == [0, 0, 0, 0]
        log.seek(0)
        assert b"workers run as root: their account cannot start one" in log.read()
    named = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "wsgi.py")],
        env={**os.environ, "PORT": str(free_port()), "WORKER_USER": account.name},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert named.returncode == 2  # asked for by name: no start as root instead
    assert f"WORKER_USER={account.name} cannot start a worker" in named.stderr
