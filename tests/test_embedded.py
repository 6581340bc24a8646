"""The embedded PostgreSQL is safe on a machine shared with other users: a password that
only we can read, no file opened through a link planted in the server's folder, a binary
cache that is used only when nobody else can have changed it, and as root an account of
the server's own that can read nothing of ours and change none of its access rules."""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2
import pytest

from identity.dev import embedded
from identity.dev.embedded import EmbeddedPostgres, EmbeddedPostgresError

ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def reachable_folder():
    """A new folder the server's account can reach (pytest's tmp_path is root's own when
    we run as root, which `nobody` cannot enter)."""
    folder = Path(tempfile.mkdtemp(prefix="identity-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(reachable_folder):
    with EmbeddedPostgres(reachable_folder / "kept", durable=False) as running:
        yield running


def test_a_connection_without_the_password_is_refused(server):
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="identity")
    psycopg2.connect(server.url).close()


def test_the_password_file_is_ours_alone(server):
    info = os.stat(server.folder / embedded.PASSWORD_FILE)
    assert info.st_uid == os.geteuid() and info.st_mode & 0o777 == 0o600


@pytest.mark.skipif(not ROOT, reason="needs root to act as a second local user (nobody)")
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux)")
def test_a_second_local_user_can_neither_read_the_password_nor_connect(server):
    nobody = pwd.getpwnam("nobody")
    probe = (
        "import socket, sys\n"
        "try:\n"
        "    open(sys.argv[1]).read()\n"
        "    print('read')\n"
        "except PermissionError:\n"
        "    print('denied')\n"
    )
    result = subprocess.run(
        ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
         os.path.realpath(sys.executable), "-I", "-c", probe,
         str(server.folder / embedded.PASSWORD_FILE)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.stdout.strip() == "denied", result
    # Nor, without the password, connect: the server asks every client for it.
    rules_file = server.folder / embedded.HBA_FILE
    rules = [line.split() for line in rules_file.read_text().splitlines() if line.strip()]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules), rules


def test_a_link_planted_in_the_server_folder_is_not_followed(server, tmp_path):
    target = tmp_path / "precious"
    target.write_text("untouched")
    planted = server.data_dir / "server.log"
    planted.symlink_to(target)  # where the log was kept before
    server.stop()
    server.start()
    assert target.read_text() == "untouched"
    assert (server.folder / embedded.LOG_FILE).stat().st_size > 0


def test_a_link_where_the_log_goes_is_refused(reachable_folder, tmp_path):
    target = tmp_path / "precious"
    target.write_text("untouched")
    folder = reachable_folder / "pg"
    folder.mkdir()
    (folder / embedded.LOG_FILE).symlink_to(target)
    with pytest.raises(EmbeddedPostgresError, match="server.log"):
        EmbeddedPostgres(folder, durable=False).start()
    assert target.read_text() == "untouched"


def test_a_binary_cache_someone_else_could_change_is_not_trusted(tmp_path):
    cache = tmp_path / "cache"
    (cache / "bin").mkdir(parents=True)
    (cache / "bin" / "postgres").write_text("#!/bin/sh\n")
    assert embedded._trusted(cache)
    (cache / "bin" / "postgres").chmod(0o666)
    assert not embedded._trusted(cache)
    (cache / "bin" / "postgres").chmod(0o755)
    if ROOT:
        os.chown(cache / "bin", pwd.getpwnam("nobody").pw_uid, -1)
        assert not embedded._trusted(cache)


def test_the_clusters_own_access_rules_cannot_open_it(server):
    """Whoever can write the cluster's pg_hba.conf (the server's account) gains nothing:
    the server reads ours, which only we can write."""
    (server.data_dir / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    with psycopg2.connect(server.url) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_reload_conf()")
    conn.close()
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="identity")
    info = os.stat(server.folder / embedded.HBA_FILE)
    assert info.st_uid == os.geteuid() and info.st_mode & 0o777 == 0o644


def test_a_second_launcher_uses_the_running_server(server):
    """`make import` beside `make run`: the second launcher runs its command against the
    server already running in the folder, and leaves it running."""
    result = subprocess.run(
        [sys.executable, "-m", "identity.dev.embedded", "--data", str(server.folder), "--",
         sys.executable, "-c", "import os; print(os.environ['DATABASE_URL'])"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == server.url
    assert "already running" in result.stderr
    psycopg2.connect(server.url).close()  # still serving


def _uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("Uid:")).split()[1])


@pytest.mark.skipif(not ROOT, reason="as root only: the server's account of its own")
def test_as_root_the_server_runs_as_an_account_of_its_own(server):
    account = pwd.getpwnam(embedded.DEFAULT_ACCOUNT)
    assert account.pw_uid not in (0, pwd.getpwnam("nobody").pw_uid)
    assert _uid_of(server._process.pid) == account.pw_uid
    info = os.stat(server.data_dir)
    assert info.st_uid == account.pw_uid and info.st_mode & 0o777 == 0o700


@pytest.mark.skipif(not ROOT, reason="as root only: the server's account of its own")
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux)")
def test_as_root_another_account_cannot_read_the_data(server):
    nobody = pwd.getpwnam("nobody")
    result = subprocess.run(
        ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
         "cat", str(server.data_dir / "PG_VERSION")],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0 and "Permission denied" in result.stderr


@pytest.mark.skipif(not ROOT, reason="as root only: the server's account of its own")
@pytest.mark.parametrize("shared", ["nobody", "root"])
def test_as_root_a_shared_account_is_refused(monkeypatch, reachable_folder, shared):
    monkeypatch.setenv(embedded.ACCOUNT_VARIABLE, shared)
    with pytest.raises(EmbeddedPostgresError, match=embedded.ACCOUNT_VARIABLE):
        EmbeddedPostgres(reachable_folder / "shared", durable=False)


@pytest.mark.skipif(not ROOT, reason="as root only: the server's account of its own")
def test_as_root_a_cluster_left_to_nobody_is_taken_back(reachable_folder):
    """A cluster an older launcher gave to `nobody` becomes the server account's."""
    folder = reachable_folder / "older"
    with EmbeddedPostgres(folder, durable=False):
        pass
    nobody = pwd.getpwnam("nobody")
    for path in (folder / embedded.CLUSTER, *(folder / embedded.CLUSTER).rglob("*")):
        os.chown(path, nobody.pw_uid, nobody.pw_gid, follow_symlinks=False)
    with EmbeddedPostgres(folder, durable=False) as server:
        psycopg2.connect(server.url).close()
    owners = {os.lstat(path).st_uid for path in (server.data_dir, *server.data_dir.rglob("*"))}
    assert owners == {pwd.getpwnam(embedded.DEFAULT_ACCOUNT).pw_uid}
