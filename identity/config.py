"""Every setting, read from the environment when the app is created, with its default."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def from_environment() -> dict:
    threads = _int("THREADS", 8)
    return {
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "HOST": os.environ.get("HOST", "127.0.0.1"),
        "PORT": _int("PORT", 3000),
        "THREADS": threads,
        # One connection per waitress thread: a request never waits for the pool.
        "POOL_SIZE": _int("POOL_SIZE", threads),
        # Everything a request does with the database ends by then (see db.py): 503 after.
        "REQUEST_DEADLINE_S": _float("REQUEST_DEADLINE_S", 5),
        # Caps per statement and per lock wait, within the deadline.
        "STATEMENT_TIMEOUT_MS": _int("STATEMENT_TIMEOUT_MS", 5000),
        "LOCK_TIMEOUT_MS": _int("LOCK_TIMEOUT_MS", 2000),
        "RETRY_BUDGET": _int("RETRY_BUDGET", 20),
        "RETRY_AFTER_S": _int("RETRY_AFTER_S", 1),
        "MAX_CONTENT_LENGTH": _int("MAX_BODY_BYTES", 64 * 1024),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        # default, recommended, or the path of a JSON list (see identity/blocklist.py)
        "BLOCKLIST": os.environ.get("BLOCKLIST", "default"),
        "SCHEMA_DIR": PROJECT_ROOT / "sql",
    }
