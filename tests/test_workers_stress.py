"""The concurrency stress test of test_concurrency.py, against two servers of two workers
each: four processes writing to one database, with connections spread over them."""

import pytest
from servers import ServerProcess
from test_concurrency import test_concurrent_checkouts_keep_every_invariant  # noqa: F401


@pytest.fixture(scope="module")
def two_servers(database_url):
    """Overrides conftest's: the same test, each server running WORKERS=2."""
    servers = [ServerProcess(database_url, WORKERS=2), ServerProcess(database_url, WORKERS=2)]
    for server in servers:
        server.wait_for_workers(2)
    yield servers
    for server in servers:
        server.stop()
