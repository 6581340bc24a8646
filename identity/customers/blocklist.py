"""The junk-value guard: e-mails and phone numbers that must never link anyone.

A blocked value is treated as absent: never stored, never matched. Lists are JSON files
of exact values and patterns (Python regular expressions, matched against the whole
normalised value): BLOCKLIST=default (shipped, conservative), BLOCKLIST=recommended
(shipped, stricter, opt-in) or BLOCKLIST=/path/to/list.json. The list applies to
requests only: changing it leaves existing rows and customers as they are.

StoredBlocklist adds the values support blocked (SPEC §9), kept in the database.
"""

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SHIPPED = Path(__file__).resolve().parent / "blocklists"


@dataclass(frozen=True)
class _Rules:
    exact: frozenset[str]
    patterns: tuple[re.Pattern, ...]

    def blocks(self, value: str) -> bool:
        return value in self.exact or any(pattern.fullmatch(value) for pattern in self.patterns)


class Blocks(Protocol):
    """What the normalisation asks of a blocklist (Blocklist or StoredBlocklist)."""

    def blocks_email(self, email: str) -> bool: ...

    def blocks_phone_number(self, raw: str, normalised: str | None) -> bool: ...


class Blocklist:
    def __init__(self, document: dict):
        self._rules = {
            kind: _Rules(
                frozenset(
                    value.strip().lower() for value in document.get(kind, {}).get("exact", [])
                ),
                tuple(
                    re.compile(pattern) for pattern in document.get(kind, {}).get("patterns", [])
                ),
            )
            for kind in ("emails", "phoneNumbers")
        }

    @classmethod
    def load(cls, name: str) -> "Blocklist":
        """A shipped list by name ("default", "recommended"), or a JSON file by path."""
        path = SHIPPED / f"{name}.json" if name in ("default", "recommended") else Path(name)
        return cls(json.loads(path.read_text()))

    def blocks_email(self, email: str) -> bool:
        return self._rules["emails"].blocks(email)

    def blocks_phone_number(self, raw: str, normalised: str | None) -> bool:
        """Placeholders are matched as typed (lower-cased), digit patterns once normalised."""
        rules = self._rules["phoneNumbers"]
        return rules.blocks(raw.strip().lower()) or (
            normalised is not None and rules.blocks(normalised)
        )


class StoredBlocklist:
    """The configured list plus the stored one (values support detached with "block":
    true, in the blocked_value table, shared by every server process).

    The stored values are read again at most every refresh_s seconds (BLOCKLIST_REFRESH_S),
    on the first check after that: a value blocked in one process is ignored by every
    process within that time. (Writers also check the table under the value's lock, so a
    blocked value links nobody even before: see repository.ValueBlocked.) load() returns
    (kind, value) pairs; it runs inside a request."""

    def __init__(self, configured: Blocklist, load, refresh_s: float = 1.0):
        self.configured, self._load, self.refresh_s = configured, load, refresh_s
        self._stored: dict[str, frozenset[str]] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def expire(self) -> None:
        """Read the table again at the next check (this process just changed it)."""
        self._loaded_at = float("-inf")

    def _stored_values(self, kind: str) -> frozenset[str]:
        with self._lock:
            if time.monotonic() - self._loaded_at >= self.refresh_s:
                stored: dict[str, set[str]] = {"email": set(), "phoneNumber": set()}
                for value_kind, value in self._load():
                    stored[value_kind].add(value)
                self._stored = {name: frozenset(values) for name, values in stored.items()}
                self._loaded_at = time.monotonic()
            return self._stored[kind]

    def blocks_email(self, email: str) -> bool:
        return self.configured.blocks_email(email) or email in self._stored_values("email")

    def blocks_phone_number(self, raw: str, normalised: str | None) -> bool:
        return self.configured.blocks_phone_number(raw, normalised) or (
            normalised is not None and normalised in self._stored_values("phoneNumber")
        )
