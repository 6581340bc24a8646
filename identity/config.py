"""Every setting, read from the environment when the app is created, with its default."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _names(name: str, default: str) -> set[str]:
    return {item.strip().lower() for item in os.environ.get(name, default).split(",") if item.strip()}


def default_workers() -> int:
    """One worker process per CPU this process may run on (cgroup and taskset aware)."""
    return len(os.sched_getaffinity(0))


def from_environment() -> dict:
    threads = _int("THREADS", 8)
    idle_timeout = _int("IDLE_TIMEOUT_S", 30)
    return {
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "HOST": os.environ.get("HOST", "127.0.0.1"),
        "PORT": _int("PORT", 3000),
        "WORKERS": _int("WORKERS", default_workers()),
        # Per worker process.
        "THREADS": threads,
        # One connection per waitress thread: a request never waits for the pool.
        "POOL_SIZE": _int("POOL_SIZE", threads),
        "STATEMENT_TIMEOUT_MS": _int("STATEMENT_TIMEOUT_MS", 5000),
        "LOCK_TIMEOUT_MS": _int("LOCK_TIMEOUT_MS", 2000),
        "CONNECT_TIMEOUT_S": _int("CONNECT_TIMEOUT_S", 3),
        "RETRY_BUDGET": _int("RETRY_BUDGET", 20),
        "RETRY_AFTER_S": _int("RETRY_AFTER_S", 1),
        "MAX_CONTENT_LENGTH": _int("MAX_BODY_BYTES", 64 * 1024),
        # Client connections: see docs/deployment.md for how the defaults were measured.
        "CONNECTION_LIMIT": _int("CONNECTION_LIMIT", 4000),  # per worker process
        "IDLE_TIMEOUT_S": idle_timeout,
        "REQUEST_TIMEOUT_S": _int("REQUEST_TIMEOUT_S", 15),
        "MAX_HEADER_BYTES": _int("MAX_HEADER_BYTES", 16 * 1024),
        "LISTEN_BACKLOG": _int("LISTEN_BACKLOG", 2048),
        # Behind a reverse proxy: the proxy's address, and the headers it sets.
        "TRUSTED_PROXY": os.environ.get("TRUSTED_PROXY", ""),
        "TRUSTED_PROXY_HEADERS": _names("TRUSTED_PROXY_HEADERS", "x-forwarded-for"),
        "TRUSTED_PROXY_COUNT": _int("TRUSTED_PROXY_COUNT", 1),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        # default, recommended, or the path of a JSON list (see identity/blocklist.py)
        "BLOCKLIST": os.environ.get("BLOCKLIST", "default"),
        "SCHEMA_DIR": PROJECT_ROOT / "sql",
    }
