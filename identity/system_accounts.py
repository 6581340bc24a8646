"""The system accounts that parts of the service run as when started as root: the
embedded PostgreSQL's (dev/embedded.py) and the web workers' (process/worker_account.py)."""

import pwd
import subprocess


class AccountNotCreated(Exception):
    """useradd could not make the account; the message is its reason."""


def what_to_do(name: str, variable: str, failure: AccountNotCreated) -> str:
    """The end of the one-line refusal when `name` (the account `variable` names) could
    not be created: why, and the operator's three ways out."""
    return (
        f"{name!r} could not be created ({failure}): create it (useradd --system "
        f"--user-group {name}), or name another with {variable}=..., or run as an "
        "ordinary user"
    )


def existing_or_created(name: str) -> pwd.struct_passwd:
    """The account, created when missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return create(name)


def create(name: str) -> pwd.struct_passwd:
    """A system account with no home, no shell and no password, in a group of its own."""
    command = ["useradd", "--system", "--user-group", "--no-create-home",
               "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        failure = result.stderr.strip() if result.returncode else ""
    except OSError as error:
        failure = str(error)
    try:
        return pwd.getpwnam(name)  # made now, or by another process at the same time
    except KeyError:
        raise AccountNotCreated(failure or "useradd failed") from None
