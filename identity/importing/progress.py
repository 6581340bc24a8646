"""Progress while the import runs, and the summary at its end.

Two stages: reading the input (the total estimated from the bytes read so far, unknown
on standard input), then importing the sorted orders (the total known). On a terminal: a
tqdm bar with orders per second and the time left. Otherwise (a log, CI): one plain line
every PLAIN_EVERY_S seconds.
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
        return lines


class Progress:
    def __init__(self, stream, stage: str, size: int | None, total: int | None = None):
        """stage: what the count is ("read", "imported"); size: the input's bytes when the
        total is estimated from them (None when unknown); total: the orders, when known."""
        self.stream, self.stage, self.size = stream, stage, size
        self.started = self.last_line = time.monotonic()
        self.bar = None
        if stream.isatty():
            self.bar = tqdm(
                total=total,
                desc=stage,
                unit=" orders",
                unit_scale=True,
                file=stream,
                dynamic_ncols=True,
            )
        self.total = total

    def update(self, done: int, consumed: int = 0) -> None:
        """done: orders so far; consumed: bytes of the input read for them."""
        if self.size and consumed:
            self.total = max(done, round(done * self.size / consumed))
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.update(done - self.bar.n)
        elif time.monotonic() - self.last_line >= PLAIN_EVERY_S:
            self.last_line = time.monotonic()
            rate = done / (self.last_line - self.started)
            of_total = f" of about {self.total:,}" if self.total else ""
            self.stream.write(f"import: {done:,}{of_total} orders {self.stage}, {rate:,.0f}/s\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
