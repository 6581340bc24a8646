"""Fixtures of make test-ha: clusters of Debian's PostgreSQL 15, PgBouncer, the service.

Skipped, with the reason, only when we are not root and the binaries are missing; as
root (CI) missing binaries are an error, since make test-ha installs them. The figures
the tests measure are printed at the end of the run.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clusters import INSTALL_HINT, Account, missing_binaries  # noqa: E402

MEASURED: list[str] = []
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("measured")
        for line in MEASURED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def account():
    missing = missing_binaries()
    if missing and os.geteuid() != 0:
        pytest.skip(f"{', '.join(missing)} missing: {INSTALL_HINT}")
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: {INSTALL_HINT}")
    return Account()


@pytest.fixture(scope="module")
def folder(account):
    path = account.folder()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def flask_command(database_url: str, *args: str, timeout_s: float = 120, **settings):
    """`flask --app identity ARGS` in its own process, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    env.update(DATABASE_URL=database_url, **settings)
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "identity", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def wait_until(condition, what: str, seconds: float = 60) -> None:
    """Poll a condition until it holds: synchronisation on state, never on time."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
