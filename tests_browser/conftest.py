"""Fixtures for the browser tests (make test-browser): a real server process on 127.0.0.1
with its own throwaway PostgreSQL, and the distribution's headless Chromium driven through
its chromedriver. Nothing is downloaded: Selenium is given the driver's path, so Selenium
Manager never runs."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT / "tests"))

from servers import ServerProcess  # noqa: E402

from identity.database.migrations import migrate  # noqa: E402
from identity.dev.embedded import EmbeddedPostgres  # noqa: E402

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOTS = PROJECT_ROOT / ".screenshots"
SUPPORT_TOKEN = "browser-test-support-token"
INSTALL_HINT = (
    f"the browser tests need Chromium and its driver ({CHROMIUM}, {CHROMEDRIVER}); on Debian "
    "or Ubuntu: sudo apt-get install chromium chromium-driver "
    "(or set CHROMIUM and CHROMEDRIVER to their paths)"
)
# Headless, and quiet: no update checks, sync or other background traffic. Even so,
# Chromium looked up an autofill server and its default search engine (seen with strace):
# the resolver rule answers every name but the test server's address with "not found"
# without asking DNS, so nothing but loopback is ever contacted.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=AutofillServerCommunication",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--no-first-run",
    "--window-size=1280,900",
]


def pytest_sessionstart(session):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.exit(INSTALL_HINT, returncode=1)
    os.environ["SE_OFFLINE"] = "true"  # should Selenium Manager ever be reached: no fetching
    SCREENSHOTS.mkdir(exist_ok=True)


@pytest.fixture(scope="session")
def database_url():
    with EmbeddedPostgres() as database:
        migrate(database.url, PROJECT_ROOT / "sql")
        yield database.url


@pytest.fixture(scope="session")
def server(database_url):
    with ServerProcess(database_url, SUPPORT_TOKENS=SUPPORT_TOKEN) as process:
        yield process


@pytest.fixture(scope="session")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
