"""Progress while the import runs, and the summary at its end.

On a terminal: a tqdm bar with orders per second and the time left, the total estimated
from the bytes read so far (unknown on standard input). Otherwise (a log, CI): one plain
line every PLAIN_EVERY_S seconds.
"""

import time
from dataclasses import dataclass, field

from tqdm import tqdm

from identity.customers.reconcile import Outcome

PLAIN_EVERY_S = 10


@dataclass
class Tally:
    read: int = 0
    rejected: int = 0
    out_of_order: int = 0
    new_rows: int = 0
    outcomes: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def add(self, outcomes: dict[Outcome, int], new_rows: int) -> None:
        self.new_rows += new_rows
        for outcome, count in outcomes.items():
            self.outcomes[outcome] += count

    def summary(self) -> list[str]:
        rate = self.read / self.seconds if self.seconds else 0
        lines = [
            f"read       {self.read:>12,} orders",
            f"new rows   {self.new_rows:>12,}",
            f"unchanged  {self.outcomes[Outcome.UNCHANGED]:>12,} orders",
            f"merges     {self.outcomes[Outcome.MERGE]:>12,} orders",
            f"rejected   {self.rejected:>12,} orders",
            f"seconds    {self.seconds:>12,.1f}  ({rate:,.0f} orders/s)",
        ]
        if self.out_of_order:
            lines.append(
                f"{self.out_of_order:,} orders were older than an earlier batch: the file is not "
                "sorted by createdAt (see docs/import.md)"
            )
        return lines


class Progress:
    def __init__(self, stream, size: int | None):
        """size: the input's bytes (None when unknown)."""
        self.stream, self.size = stream, size
        self.bar = None
        if stream.isatty():
            self.bar = tqdm(
                total=None, unit=" orders", unit_scale=True, file=stream, dynamic_ncols=True
            )
        self.last_line = time.monotonic()

    def update(self, tally: Tally, consumed: int) -> None:
        """consumed: bytes of the input read for the orders in the tally."""
        if self.bar is not None:
            if self.size and consumed:
                self.bar.total = max(tally.read, round(tally.read * self.size / consumed))
            self.bar.update(tally.read - self.bar.n)
        elif time.monotonic() - self.last_line >= PLAIN_EVERY_S:
            self.last_line = time.monotonic()
            percent = f", {100 * consumed / self.size:.0f} % of the file" if self.size else ""
            self.stream.write(
                f"import: {tally.read:,} orders read, {tally.rejected:,} rejected, "
                f"{tally.read / tally.seconds:,.0f} orders/s{percent}\n"
            )
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
