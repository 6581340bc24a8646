"""Every setting, read from the environment when the app is created, with its default."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _tokens(name: str) -> tuple[str, ...]:
    """A comma-separated list of bearer tokens; blanks around and between commas are dropped."""
    return tuple(token.strip() for token in os.environ.get(name, "").split(",") if token.strip())


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _names(name: str, default: str) -> set[str]:
    return {
        item.strip().lower() for item in os.environ.get(name, default).split(",") if item.strip()
    }


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
        # Feed long polls that may wait at once, per worker process: each has a thread of
        # its own beyond THREADS; one more is refused with a 429.
        "LONG_POLLS": _int("LONG_POLLS", 4),
        # One connection per waitress thread: a request never waits for the pool. (A
        # waiting long poll holds none; it takes one for a moment at each look.)
        "POOL_SIZE": _int("POOL_SIZE", threads),
        # Everything a request does with the database ends by then (see db.py): 503 after.
        "REQUEST_DEADLINE_S": _float("REQUEST_DEADLINE_S", 5),
        # Caps per statement and per lock wait, within the deadline.
        "STATEMENT_TIMEOUT_MS": _int("STATEMENT_TIMEOUT_MS", 5000),
        "LOCK_TIMEOUT_MS": _int("LOCK_TIMEOUT_MS", 2000),
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
        # Host names requests may be addressed to, besides the loopback names and HOST
        # (see identity/web/access.py); `*` for any.
        "ALLOWED_HOSTS": _names("ALLOWED_HOSTS", ""),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        # default, recommended, or the path of a JSON list (see identity/customers/blocklist.py)
        "BLOCKLIST": os.environ.get("BLOCKLIST", "default"),
        # Seconds between two reads of the stored blocklist (values support blocked).
        "BLOCKLIST_REFRESH_S": float(os.environ.get("BLOCKLIST_REFRESH_S", 1)),
        "SCHEMA_DIR": PROJECT_ROOT / "sql",
        # Bearer tokens per role (see identity/web/access.py); none means loopback clients only.
        "CHECKOUT_TOKENS": _tokens("CHECKOUT_TOKENS"),
        "SUPPORT_TOKENS": _tokens("SUPPORT_TOKENS"),
        "FEED_TOKENS": _tokens("FEED_TOKENS"),
        # The support console's session cookie: the key that signs it (derived per
        # deployment when unset: see console/auth.py), and Secure even when a TLS proxy
        # hides HTTPS from us.
        "SECRET_KEY": os.environ.get("SECRET_KEY") or None,
        "SESSION_COOKIE_SECURE": os.environ.get("SESSION_COOKIE_SECURE", "") == "true",
        # The hub alarm (identity/customers/hubs.py): more partners than this make a suspected hub;
        # alert records it, block also puts it on the stored blocklist.
        "HUB_MAX_PARTNERS": _int("HUB_MAX_PARTNERS", 10),
        "HUB_ACTION": os.environ.get("HUB_ACTION", "alert"),
    }
