"""Every setting, read from the environment when the app is created, with its default.

Each value is checked as it is read: a value that is not allowed raises ConfigError, whose
one-line message names the variable, the value given and what is allowed. The supervisor
reads them all before it starts a worker, so a typo stops the start (exit status 2)
instead of killing every worker as it starts. A new setting is one line of
from_environment() with the reader of its kind.
"""

import os
import re
from importlib import metadata, resources
from pathlib import Path

from identity.customers.normalise import known_region

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The name on the package index; the import package stays `identity`.
DISTRIBUTION = "identity-reconciler"
# The schema migrations ship inside the package (in the repository, a link to sql/).
SCHEMA_DIR = Path(str(resources.files("identity.database") / "sql"))
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
HUB_ACTIONS = ("alert", "block")  # identity/customers/hubs.py's ACTIONS
SHIPPED_BLOCKLISTS = ("default", "recommended")
# The client-address headers waitress can take from a trusted proxy.
PROXY_HEADERS = ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
                 "x-forwarded-by", "forwarded")


class ConfigError(ValueError):
    """A setting's value is not allowed; the message is one line for the operator."""

    def __init__(self, name: str, value: str, allowed: str):
        super().__init__(f"{name}={value!r} is not allowed: {allowed}")


def version() -> str:
    """This installation's version (the package's metadata), "unknown" when not installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def _raw(name: str) -> str | None:
    """The variable's value; None when unset or empty (an empty value means the default)."""
    value = os.environ.get(name, "").strip()
    return value or None


def _int(name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    raw = _raw(name)
    if raw is None:
        return default
    upper = f" to {maximum}" if maximum is not None else " up"
    allowed = f"a whole number from {minimum}{upper}"
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, raw, allowed) from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(name, raw, allowed)
    return value


def _float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = _raw(name)
    if raw is None:
        return default
    allowed = f"a number of at least {minimum:g}"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, raw, allowed) from None
    if not minimum <= value < float("inf"):
        raise ConfigError(name, raw, allowed)
    return value


def _bool(name: str, default: bool) -> bool:
    raw = _raw(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    spellings = f"{'/'.join(_TRUE)} or {'/'.join(_FALSE)}"
    raise ConfigError(name, raw, f"true or false ({spellings}, any case)")


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of choices, matched in any case and returned as spelled in choices."""
    raw = _raw(name)
    if raw is None:
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise ConfigError(name, raw, f"one of {', '.join(choices)}")


def _text(name: str, default: str = "") -> str:
    return _raw(name) or default


def _tokens(name: str) -> tuple[str, ...]:
    """A comma-separated list of bearer tokens; blanks around and between commas are dropped."""
    return tuple(token.strip() for token in os.environ.get(name, "").split(",") if token.strip())


def _names(name: str, default: str, allowed: tuple[str, ...] | None = None) -> set[str]:
    names = {item.strip().lower() for item in (_raw(name) or default).split(",") if item.strip()}
    if allowed is not None and names - set(allowed):
        allowed_list = f"a comma-separated list of {', '.join(allowed)}"
        raise ConfigError(name, os.environ.get(name, ""), allowed_list)
    return names


def _blocklist(name: str, default: str) -> str:
    """A shipped list's name, or the path of a JSON blocklist that loads."""
    from identity.customers.blocklist import Blocklist  # the domain reads the file's rules

    raw = _raw(name) or default
    try:
        Blocklist.load(raw)
    except (OSError, ValueError, AttributeError, TypeError, re.error):
        shipped = " or ".join(SHIPPED_BLOCKLISTS)
        allowed = f"{shipped}, or the path of a readable JSON blocklist file"
        raise ConfigError(name, raw, allowed) from None
    return raw


def _region(name: str) -> str | None:
    try:
        return phone_region(_raw(name))
    except ValueError:
        allowed = "a region code with a phone numbering plan (GB, IN, ...)"
        raise ConfigError(name, os.environ.get(name, ""), allowed) from None


def phone_region(region: str | None) -> str | None:
    """PHONE_REGION checked: a typo must stop the service, not silently store two forms."""
    region = region.strip().upper() if region else None
    if region is not None and not known_region(region):
        raise ValueError(f"PHONE_REGION={region!r} is not a region with a phone numbering plan")
    return region


def default_workers() -> int:
    """One worker process per CPU this process may run on (cgroup and taskset aware)."""
    return len(os.sched_getaffinity(0))


def from_environment() -> dict:
    # More threads only interleave more requests under one GIL, which lengthens the tail
    # (docs/benchmarks.md: p99 at concurrency 16 on two cores, 70 ms with 8 threads,
    # 41-46 ms with 4, 28-35 ms with 2, throughput within 5 %).
    threads = _int("THREADS", 2)
    idle_timeout = _int("IDLE_TIMEOUT_S", 30)
    return {
        "DATABASE_URL": _text("DATABASE_URL"),
        # Optional: where init-db connects instead of DATABASE_URL, e.g. the primary itself
        # rather than PgBouncer (migrations work through either; docs/deployment.md).
        "MIGRATION_DATABASE_URL": _text("MIGRATION_DATABASE_URL"),
        "HOST": _text("HOST", "127.0.0.1"),
        "PORT": _int("PORT", 3000, minimum=0, maximum=65535),
        "WORKERS": _int("WORKERS", default_workers()),
        # A worker whose main loop is silent this long is killed and replaced.
        "WORKER_TIMEOUT_S": _int("WORKER_TIMEOUT_S", 30),
        # Per worker process.
        "THREADS": threads,
        # Feed long polls that may wait at once, per worker process: each has a thread of
        # its own beyond THREADS; one more is refused with a 429.
        "LONG_POLLS": _int("LONG_POLLS", 4, minimum=0),
        # One connection per waitress thread: a request never waits for the pool. (A
        # waiting long poll holds none; it takes one for a moment at each look.)
        "POOL_SIZE": _int("POOL_SIZE", threads),
        # Everything a request does with the database ends by then (see db.py): 503 after.
        "REQUEST_DEADLINE_S": _float("REQUEST_DEADLINE_S", 5, minimum=0.001),
        # Caps per statement and per lock wait, within the deadline.
        "STATEMENT_TIMEOUT_MS": _int("STATEMENT_TIMEOUT_MS", 5000),
        "LOCK_TIMEOUT_MS": _int("LOCK_TIMEOUT_MS", 2000),
        "RETRY_BUDGET": _int("RETRY_BUDGET", 20, minimum=0),
        "RETRY_AFTER_S": _int("RETRY_AFTER_S", 1),
        "MAX_CONTENT_LENGTH": _int("MAX_BODY_BYTES", 64 * 1024),
        # Client connections: see docs/deployment.md for how the defaults were measured.
        "CONNECTION_LIMIT": _int("CONNECTION_LIMIT", 4000),  # per worker process
        "IDLE_TIMEOUT_S": idle_timeout,
        "REQUEST_TIMEOUT_S": _int("REQUEST_TIMEOUT_S", 15),
        "MAX_HEADER_BYTES": _int("MAX_HEADER_BYTES", 16 * 1024),
        "LISTEN_BACKLOG": _int("LISTEN_BACKLOG", 2048),
        # Behind a reverse proxy: the proxy's address, and the headers it sets.
        "TRUSTED_PROXY": _text("TRUSTED_PROXY"),
        "TRUSTED_PROXY_HEADERS": _names("TRUSTED_PROXY_HEADERS", "x-forwarded-for", PROXY_HEADERS),
        "TRUSTED_PROXY_COUNT": _int("TRUSTED_PROXY_COUNT", 1),
        # Host names requests may be addressed to, besides the loopback names and HOST
        # (see identity/web/access.py); `*` for any.
        "ALLOWED_HOSTS": _names("ALLOWED_HOSTS", ""),
        # As root, the account the workers run as (None: identity-web, see
        # identity/process/worker_account.py).
        "WORKER_USER": _raw("WORKER_USER"),
        "LOG_LEVEL": _choice("LOG_LEVEL", "INFO", LOG_LEVELS),
        # default, recommended, or the path of a JSON list (see identity/customers/blocklist.py)
        "BLOCKLIST": _blocklist("BLOCKLIST", "default"),
        # Seconds between two reads of the stored blocklist (values support blocked).
        "BLOCKLIST_REFRESH_S": _float("BLOCKLIST_REFRESH_S", 1),
        "SCHEMA_DIR": SCHEMA_DIR,
        # Bearer tokens per role (see identity/web/access.py); none means loopback clients only.
        "CHECKOUT_TOKENS": _tokens("CHECKOUT_TOKENS"),
        "SUPPORT_TOKENS": _tokens("SUPPORT_TOKENS"),
        "FEED_TOKENS": _tokens("FEED_TOKENS"),
        # The support console's session cookie: the key that signs it (derived per
        # deployment when unset: see console/auth.py), and Secure even when a TLS proxy
        # hides HTTPS from us.
        "SECRET_KEY": os.environ.get("SECRET_KEY") or None,
        "SESSION_COOKIE_SECURE": _bool("SESSION_COOKIE_SECURE", False),
        # The hub alarm (identity/customers/hubs.py): more partners than this make a suspected hub;
        # alert records it, block also puts it on the stored blocklist.
        "HUB_MAX_PARTNERS": _int("HUB_MAX_PARTNERS", 10),
        "HUB_ACTION": _choice("HUB_ACTION", "alert", HUB_ACTIONS),
        # Phone numbers of this region (GB, IN, ...) and international ones are stored in
        # E.164 (identity/customers/normalise.py); unset: separators removed only.
        "PHONE_REGION": _region("PHONE_REGION"),
    }
