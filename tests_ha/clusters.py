"""Real PostgreSQL 15 clusters and PgBouncer, as Debian installs them, on loopback ports.

PostgreSQL and PgBouncer refuse to run as root: when the tests run as root (CI), every
server runs as a dedicated account, `identity-test`, created on first use; otherwise as
ourselves. Servers are our direct children and get a parent-death signal, so none
outlives the test run that started it, even a killed one.
"""

import grp
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2

from identity.dev.embedded import free_port

PG_BIN = Path(os.environ.get("PG15_BIN", "/usr/lib/postgresql/15/bin"))
PGBOUNCER = Path(shutil.which("pgbouncer") or "/usr/sbin/pgbouncer")
ACCOUNT = "identity-test"
SUPERUSER = "postgres"
DATABASE = "identity"
START_TIMEOUT_S = 60
INSTALL_HINT = (
    f"needs Debian's postgresql-15 ({PG_BIN}) and pgbouncer ({PGBOUNCER}): "
    "apt-get install postgresql-15 pgbouncer (make test-ha does it when run as root)"
)


def missing_binaries() -> list[str]:
    wanted = [PG_BIN / name for name in ("initdb", "postgres", "pg_ctl", "pg_basebackup")]
    return [str(path) for path in [*wanted, PGBOUNCER] if not os.access(path, os.X_OK)]


class Account:
    """Who runs the servers: `identity-test` when we are root, else ourselves."""

    def __init__(self):
        self.as_root = os.geteuid() == 0
        if self.as_root:
            self._create()
            entry = pwd.getpwnam(ACCOUNT)
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
        else:
            self.uid, self.gid = os.getuid(), os.getgid()

    @staticmethod
    def _create() -> None:
        try:
            pwd.getpwnam(ACCOUNT)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    ACCOUNT,
                ],
                check=False,  # a concurrent run may have created it: checked next
            )
            pwd.getpwnam(ACCOUNT)
            grp.getgrnam(ACCOUNT)

    def command(self, argv: list[str], death_signal: str | None = None) -> list[str]:
        """argv run as the account; death_signal: sent to it if we die first."""
        prefix = ["setpriv"]
        if self.as_root:
            prefix += ["--reuid", str(self.uid), "--regid", str(self.gid), "--clear-groups"]
        if death_signal:
            prefix += ["--pdeathsig", death_signal]
        return [*prefix, "--", *map(str, argv)]

    def run(self, argv: list[str], timeout_s: float = 120) -> str:
        result = subprocess.run(
            self.command(argv), capture_output=True, text=True, timeout=timeout_s, cwd="/"
        )
        if result.returncode:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def folder(self) -> Path:
        """A new private folder the account owns."""
        path = Path(tempfile.mkdtemp(prefix="identity-ha-"))
        os.chown(path, self.uid, self.gid)
        return path


class Cluster:
    """One PostgreSQL 15 cluster: trust authentication, listening on 127.0.0.1 only."""

    def __init__(self, account: Account, folder: Path, name: str):
        self.account = account
        self.folder = folder
        self.name = name
        self.data = folder / name
        self.port = free_port()
        self.log_path = folder / f"{name}.log"
        self.process: subprocess.Popen | None = None

    @classmethod
    def create(cls, account: Account, folder: Path, name: str) -> "Cluster":
        cluster = cls(account, folder, name)
        account.run(
            [
                PG_BIN / "initdb",
                "-D",
                cluster.data,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        return cluster

    @classmethod
    def standby_of(cls, primary: "Cluster", name: str) -> "Cluster":
        """A streaming standby (pg_basebackup -R) of a running primary."""
        standby = cls(primary.account, primary.folder, name)
        primary.account.run(
            [
                PG_BIN / "pg_basebackup",
                "-h",
                "127.0.0.1",
                "-p",
                primary.port,
                "-U",
                SUPERUSER,
                "-D",
                standby.data,
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ]
        )
        return standby

    def start(self, **settings) -> None:
        """Start the server with settings (name=value) on top of the stock configuration."""
        settings = {
            "port": self.port,
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": self.folder,
            **settings,
        }
        options = [f"-c{name}={value}" for name, value in settings.items()]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.account.command([PG_BIN / "postgres", "-D", self.data, *options], "SIGQUIT"),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
            )
        wait_until_connectable(self.url("postgres"), self.process, self.log_path)

    def url(self, dbname: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def pg_ctl(self, *args: str) -> None:
        self.account.run(
            [PG_BIN / "pg_ctl", "-D", self.data, "-w", "-t", str(START_TIMEOUT_S), *args]
        )

    def kill_immediately(self) -> None:
        """What a crash looks like to clients: every connection cut at once, no checkpoint."""
        self.pg_ctl("-m", "immediate", "stop")
        self.process.wait(START_TIMEOUT_S)

    def promote(self) -> None:
        self.pg_ctl("promote")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: clients cut off
            self.process.wait(START_TIMEOUT_S)

    def query(self, sql: str, params=None, dbname: str = DATABASE) -> list[tuple]:
        conn = psycopg2.connect(self.url(dbname), connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()


class PgBouncer:
    """PgBouncer in front of one database: transaction pooling, stock settings otherwise
    (settings: name=value lines added to its [pgbouncer] section)."""

    def __init__(
        self, account: Account, folder: Path, cluster: Cluster, dbname: str = DATABASE, **settings
    ):
        self.port = free_port()
        self.dbname = dbname
        self.folder = folder
        self.settings = settings
        self.log_path = folder / "pgbouncer.log"
        self.config_path = folder / "pgbouncer.ini"
        users = folder / "userlist.txt"
        users.write_text(f'"{SUPERUSER}" ""\n')
        self._configure(cluster)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                account.command([PGBOUNCER, self.config_path], "SIGTERM"),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
            )
        wait_until_connectable(self.url(), self.process, self.log_path)

    def _configure(self, cluster: Cluster) -> None:
        extra = "".join(f"{name} = {value}\n" for name, value in self.settings.items())
        self.config_path.write_text(
            "[databases]\n"
            f"{self.dbname} = host=127.0.0.1 port={cluster.port} dbname={self.dbname}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir = {self.folder}\n"
            f"auth_type = trust\nauth_file = {self.folder / 'userlist.txt'}\n"
            f"pool_mode = transaction\n{extra}"
        )

    def repoint(self, cluster: Cluster) -> None:
        """Send new connections to another cluster: a new configuration, then RELOAD
        (SIGHUP), as a failover hook does."""
        self._configure(cluster)
        self.process.send_signal(signal.SIGHUP)

    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{self.dbname}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(START_TIMEOUT_S)


def wait_until_connectable(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
        try:
            psycopg2.connect(url, connect_timeout=2).close()
            return
        except psycopg2.OperationalError as error:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} does not answer: {error}") from None
            time.sleep(0.05)
