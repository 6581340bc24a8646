"""Who the web workers run as when the supervisor runs as root.

The supervisor may need root (to listen on a port below 1024, say); the workers, which
parse every request, do not. As root they run as an account of their own: WORKER_USER, by
default `identity-web`, created when missing (a system account with no home, no shell and
no password). Never root, nor an account other programs share (`nobody`), nor the
embedded PostgreSQL's: a worker that is broken into then reads neither the database's
files nor anything else only root may read. As any other user, the workers run as we do.

The workers are fresh interpreters, so that account must be able to run ours and import
the project: a Python installed under /root (pyenv, say) is closed to it. Then an account
named by WORKER_USER stops the start; the default one is skipped with a warning, and the
workers keep root (install Python and the project where that account can read them).
"""

import logging
import os
import subprocess
import sys
from dataclasses import dataclass

from identity import system_accounts
from identity.dev.embedded import ACCOUNT_VARIABLE as DATABASE_ACCOUNT_VARIABLE
from identity.dev.embedded import DEFAULT_ACCOUNT as DEFAULT_DATABASE_ACCOUNT
from identity.dev.embedded import SHARED_ACCOUNTS

logger = logging.getLogger("identity.process.supervisor")

VARIABLE = "WORKER_USER"
DEFAULT_ACCOUNT = "identity-web"
# What a worker does first: if this account can, it can start (a BLOCKLIST file only root
# may read, say, would stop it).
_PROBE = "import identity.process.server\nfrom identity import config\nconfig.from_environment()"


class WorkerAccountError(Exception):
    """The workers' account is refused or cannot be made: one line for the operator."""


@dataclass(frozen=True)
class WorkerAccount:
    name: str
    uid: int
    gid: int

    def popen_options(self) -> dict:
        """subprocess options that start a program as this account, with no other group."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def worker_account(name: str | None) -> tuple[WorkerAccount | None, dict]:
    """The account the workers run as, None when they run as we do (we are not root, or
    the default account cannot run our interpreter: then also why, for the warning that
    warn_root_workers() logs). name: WORKER_USER, None when unset."""
    if os.geteuid() != 0:
        return None, {}
    account = account_named(name or DEFAULT_ACCOUNT)
    failure = cannot_start_workers(account)
    if not failure:
        return account, {}
    if name:
        raise WorkerAccountError(f"{VARIABLE}={name} cannot start a worker: {failure}")
    return None, {"account": account.name, "why": failure, "interpreter": sys.executable}


def warn_root_workers(why: dict) -> None:
    logger.warning("workers run as root: their account cannot start one", extra=why)


def account_named(name: str) -> WorkerAccount:
    """The account, created when missing; refused when shared, root or the database's."""
    database_account = os.environ.get(DATABASE_ACCOUNT_VARIABLE) or DEFAULT_DATABASE_ACCOUNT
    if name in (*SHARED_ACCOUNTS, database_account):
        raise WorkerAccountError(
            f"{VARIABLE}={name} is not allowed: name an account of the workers' own (not "
            f"{', '.join(SHARED_ACCOUNTS)} or the embedded PostgreSQL's {database_account})"
        )
    try:
        entry = system_accounts.existing_or_created(name)
    except system_accounts.AccountNotCreated as failure:
        raise WorkerAccountError(
            "as root the workers run as their own account, and "
            + system_accounts.what_to_do(name, VARIABLE, failure)
        ) from None
    if entry.pw_uid == 0:
        raise WorkerAccountError(f"{VARIABLE}={name} is root: name an unprivileged account")
    return WorkerAccount(entry.pw_name, entry.pw_uid, entry.pw_gid)


def cannot_start_workers(
    account: WorkerAccount, interpreter: str = sys.executable, env: dict | None = None
) -> str:
    """Why this account cannot run the interpreter (ours) and start a worker; '' when it can."""
    try:
        result = subprocess.run(
            [interpreter, "-c", _PROBE],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=env,
            **account.popen_options(),
        )
    except OSError as error:  # a folder on the way to the interpreter is closed to it
        return f"{interpreter}: {error.strerror}"
    lines = result.stderr.strip().splitlines()
    return "" if result.returncode == 0 else (lines[-1] if lines else f"status {result.returncode}")
