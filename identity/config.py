"""Every setting, read from the environment when the app is created, with its default."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def from_environment() -> dict:
    threads = _int("THREADS", 8)
    return {
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "HOST": os.environ.get("HOST", "127.0.0.1"),
        "PORT": _int("PORT", 3000),
        "THREADS": threads,
        # One connection per waitress thread: a request never waits for the pool.
        "POOL_SIZE": _int("POOL_SIZE", threads),
        "STATEMENT_TIMEOUT_MS": _int("STATEMENT_TIMEOUT_MS", 5000),
        "LOCK_TIMEOUT_MS": _int("LOCK_TIMEOUT_MS", 2000),
        "CONNECT_TIMEOUT_S": _int("CONNECT_TIMEOUT_S", 3),
        "RETRY_BUDGET": _int("RETRY_BUDGET", 20),
        "RETRY_AFTER_S": _int("RETRY_AFTER_S", 1),
        "MAX_CONTENT_LENGTH": _int("MAX_BODY_BYTES", 64 * 1024),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        # default, recommended, or the path of a JSON list (see identity/blocklist.py)
        "BLOCKLIST": os.environ.get("BLOCKLIST", "default"),
        # Seconds between two reads of the stored blocklist (values support blocked).
        "BLOCKLIST_REFRESH_S": float(os.environ.get("BLOCKLIST_REFRESH_S", 1)),
        "SCHEMA_DIR": PROJECT_ROOT / "sql",
    }
