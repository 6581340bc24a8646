"""The deliverer's settings, from the environment, with their defaults."""

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from identity.feed import events as feed

_SUBSCRIBER_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it, never its value."""


def _number(environ, name: str, default, kind=float, low=0.0, high=float("inf")):
    text = environ.get(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if not low < value <= high:
        bound = "" if high == float("inf") else f" and at most {high}"
        raise ConfigError(f"{name} must be greater than {low}{bound}")
    return value


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret: bytes
    subscriber: str
    batch_size: int
    timeout_s: float
    # Retries wait base * 2^attempt seconds, at most max, half of it random (jitter).
    backoff_base_s: float
    backoff_max_s: float
    # How often an idle deliverer, or one waiting for the subscriber's lease, looks again.
    poll_interval_s: float
    # How long a deliverer's right to its subscriber lasts unless renewed: the wait before
    # another deliverer takes over from one that died. At least 3 x timeout_s, so that a
    # lease renewed at half-life outlasts the next POST.
    lease_s: float

    @classmethod
    def from_environment(cls, environ=os.environ) -> "WebhookConfig":
        url = environ.get("WEBHOOK_URL", "")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("WEBHOOK_URL must be an http:// or https:// URL")
        secret = environ.get("WEBHOOK_SECRET", "")
        if not secret:
            raise ConfigError("WEBHOOK_SECRET must be set")
        subscriber = environ.get("WEBHOOK_SUBSCRIBER", "default")
        if not _SUBSCRIBER_NAME.fullmatch(subscriber):
            raise ConfigError(
                "WEBHOOK_SUBSCRIBER must be 1 to 100 characters of A-Z a-z 0-9 . _ - "
                "(it is named in every signed batch: see signing.py)"
            )
        timeout_s = _number(environ, "WEBHOOK_TIMEOUT_S", 10.0)
        lease_s = _number(environ, "WEBHOOK_LEASE_S", max(30.0, 3 * timeout_s))
        if lease_s < 3 * timeout_s:
            raise ConfigError("WEBHOOK_LEASE_S must be at least 3 times WEBHOOK_TIMEOUT_S")
        return cls(
            url=url,
            secret=secret.encode(),
            subscriber=subscriber,
            batch_size=_number(environ, "WEBHOOK_BATCH_SIZE", 100, int, 0, feed.MAX_LIMIT),
            timeout_s=timeout_s,
            backoff_base_s=_number(environ, "WEBHOOK_BACKOFF_BASE_S", 0.5),
            backoff_max_s=_number(environ, "WEBHOOK_BACKOFF_MAX_S", 60.0),
            poll_interval_s=_number(environ, "WEBHOOK_POLL_S", 0.5),
            lease_s=lease_s,
        )
