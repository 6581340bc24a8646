"""The junk-value guard: e-mails and phone numbers that must never link anyone.

A blocked value is treated as absent: never stored, never matched. Lists are JSON files
of exact values and patterns (Python regular expressions, matched against the whole
normalised value): BLOCKLIST=default (shipped, conservative), BLOCKLIST=recommended
(shipped, stricter, opt-in) or BLOCKLIST=/path/to/list.json. The list applies to
requests only: changing it leaves existing rows and customers as they are.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "blocklists"


@dataclass(frozen=True)
class _Rules:
    exact: frozenset[str]
    patterns: tuple[re.Pattern, ...]

    def blocks(self, value: str) -> bool:
        return value in self.exact or any(pattern.fullmatch(value) for pattern in self.patterns)


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
