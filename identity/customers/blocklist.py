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


@dataclass(frozen=True)
class _Snapshot:
    read_from: float  # time.monotonic() when its read began
    values: dict[str, frozenset[str]]


class StoredBlocklist:
    """The configured list plus the stored one (values support detached with "block":
    true, in the blocked_value table, shared by every server process).

    Checks read a snapshot of the stored values: no I/O and no lock inside validation.
    The web layer calls refresh_if_stale() before it validates a request; the table is
    read again when the snapshot is older than refresh_s (BLOCKLIST_REFRESH_S) or was
    expired, so a value blocked in one process is ignored by every process within that
    time. (Writers also check the table under the value's lock, so a blocked value links
    nobody even before: see repository.ValueBlocked.) load() returns (kind, value) pairs;
    it runs in the request that refreshes."""

    def __init__(self, configured: Blocklist, load, refresh_s: float = 1.0):
        self.configured, self._load, self.refresh_s = configured, load, refresh_s
        self._snapshot = _Snapshot(
            float("-inf"), {"email": frozenset(), "phoneNumber": frozenset()}
        )
        self._expired_at = float("-inf")
        # Taken without waiting: a request that finds a refresh under way validates
        # against the current snapshot instead of queueing behind the database.
        self._refreshing = threading.Lock()

    def expire(self) -> None:
        """Read the table again at the next refresh (this process just changed it)."""
        self._expired_at = time.monotonic()

    def refresh_if_stale(self) -> None:
        """Read the table if the snapshot is stale and no other thread is reading it."""
        if self._is_fresh() or not self._refreshing.acquire(blocking=False):
            return
        try:
            if not self._is_fresh():
                self.refresh_now()
        finally:
            self._refreshing.release()

    def refresh_now(self) -> None:
        """Read the table now (a write found a value blocked since validation)."""
        read_from = time.monotonic()
        stored: dict[str, set[str]] = {"email": set(), "phoneNumber": set()}
        for value_kind, value in self._load():
            stored[value_kind].add(value)
        snapshot = _Snapshot(
            read_from, {kind: frozenset(values) for kind, values in stored.items()}
        )
        if snapshot.read_from > self._snapshot.read_from:  # a slower, older read loses
            self._snapshot = snapshot

    def _is_fresh(self) -> bool:
        read_from = self._snapshot.read_from
        return read_from > self._expired_at and time.monotonic() - read_from < self.refresh_s

    def blocks_email(self, email: str) -> bool:
        return self.configured.blocks_email(email) or email in self._snapshot.values["email"]

    def blocks_phone_number(self, raw: str, normalised: str | None) -> bool:
        return self.configured.blocks_phone_number(raw, normalised) or (
            normalised is not None and normalised in self._snapshot.values["phoneNumber"]
        )
