"""The valid orders in createdAt order, file order among equal times, whatever the
order of the file: SPEC §11 compares the import with a replay in that order.

Up to RUN_SIZE orders are sorted in memory. A larger input is cut into runs of RUN_SIZE
orders, each sorted and written to a private temporary folder (tempfile's: TMPDIR, then
/tmp), and the runs are merged while the orders are loaded (heapq.merge reads one line of
each run at a time). Memory is then RUN_SIZE orders plus a read buffer per run; at most
MAX_RUNS runs are open at once (more are first merged into one). The folder holds the
orders' e-mails and phone numbers: only its owner can enter it, and it is removed when
the import ends (a killed import leaves it behind).
"""

import heapq
import itertools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime

from .orders import Order

RUN_SIZE = 200_000
MAX_RUNS = 64


class SortFilesFailed(Exception):
    """A run could not be written (a full disk, say); the message says where."""


def import_order(order: Order) -> tuple:
    """createdAt, then the line in the file (unique: the key decides every tie)."""
    return (order.created_at, order.line)


class OrderSorter:
    """Collects orders (add), then gives them back in import order (sorted_orders)."""

    def __init__(self) -> None:
        self._orders: list[Order] = []
        self._runs: list[str] = []
        self._folder: tempfile.TemporaryDirectory | None = None
        self._names = itertools.count()
        self.count = 0

    def __enter__(self) -> "OrderSorter":
        return self

    def __exit__(self, *_exception) -> None:
        if self._folder is not None:
            self._folder.cleanup()

    def add(self, order: Order) -> None:
        self._orders.append(order)
        self.count += 1
        if len(self._orders) >= RUN_SIZE:
            self._orders.sort(key=import_order)
            if len(self._runs) + 1 >= MAX_RUNS:
                self._runs = [self._write_run(self._merged_runs())]
            self._runs.append(self._write_run(self._orders))
            self._orders = []

    def sorted_orders(self) -> Iterator[Order]:
        self._orders.sort(key=import_order)
        if not self._runs:
            return iter(self._orders)
        return heapq.merge(*self._open_runs(), self._orders, key=import_order)

    def _merged_runs(self) -> Iterator[Order]:
        return heapq.merge(*self._open_runs(), key=import_order)

    def _open_runs(self) -> list[Iterator[Order]]:
        return [_read_run(path) for path in self._runs]

    def _write_run(self, orders: Iterable[Order]) -> str:
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="identity-import-")
        path = os.path.join(self._folder.name, f"run-{next(self._names)}")
        try:
            with open(path, "w", encoding="utf-8") as run:
                for order in orders:
                    run.write(_encode(order))
        except OSError as error:
            raise SortFilesFailed(
                f"cannot write the sorted orders to {self._folder.name}: {error.strerror}"
            ) from None
        return path


def _encode(order: Order) -> str:
    fields = [order.created_at.isoformat(), order.line, order.email, order.phone_number]
    return json.dumps(fields) + "\n"


def _read_run(path: str) -> Iterator[Order]:
    """The orders of one run, read lazily; the file is deleted once read."""
    with open(path, encoding="utf-8") as run:
        for line in run:
            created_at, number, email, phone_number = json.loads(line)
            yield Order(number, email, phone_number, datetime.fromisoformat(created_at))
    os.remove(path)
