"""The embedded PostgreSQL is safe on a machine shared with other users: a password that
only we can read, no file opened through a link planted in the server's folder, and a
binary cache that is used only when nobody else can have changed it."""

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
    hba = subprocess.run(
        ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
         "cat", str(server.data_dir / "pg_hba.conf")],
        capture_output=True, text=True, timeout=30,
    )
    rules = [line.split() for line in hba.stdout.splitlines() if line and not line.startswith("#")]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules), hba.stdout


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
