"""`flask --app identity import FILE`: load historical orders (see docs/import.md).

The whole input is read first (orders validated, rejects listed, the valid orders
sorted by createdAt, file order among equal times: sorting.py), then loaded in that order,
one batch per transaction (loader.py), so the result does not depend on the file's order.

Exit status: 0 every order was imported, 1 some were rejected (listed in the rejects
file), 2 the import could not run or did not finish (no such file, no database, a
truncated or damaged input, Ctrl-C).
"""

import errno
import json
import math
import os
import signal
import stat
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from typing import IO

import click
import psycopg2

from identity.customers import repository as service_repository
from identity.customers.blocklist import StoredBlocklist
from identity.database import connections
from identity.database.transaction import Limits

from . import repository
from .loader import BatchFailed, Loader
from .orders import Order, OrderValidator
from .progress import Progress, Tally
from .reader import (
    DamagedInput,
    Reject,
    Source,
    UnreadableInput,
    read_ahead,
    read_orders,
)
from .sorting import OrderSorter, SortFilesFailed

DEFAULT_BATCH_SIZE = 1000
EXIT_IMPORTED, EXIT_REJECTED, EXIT_FAILED = 0, 1, 2
_NO_SCHEMA = "the database has no contact table: run make db-init"
PROGRESS_EVERY = 1000  # orders read between updates of the progress display


def default_rejects_path(file: str) -> str:
    return "stdin.rejects.ndjson" if file == "-" else f"{file}.rejects.ndjson"


def run_import(
    settings, configured_blocklist, file: str, rejects_path: str, batch_size: int
) -> int:
    """Import FILE; settings are the app's (DATABASE_URL, timeouts, RETRY_BUDGET).

    Returns the exit status: EXIT_IMPORTED, EXIT_REJECTED or EXIT_FAILED."""
    try:
        source = Source(file)
    except UnreadableInput as error:
        return _fail(str(error))
    try:
        conn = _connect(settings)
    except psycopg2.Error as error:
        source.close()
        if isinstance(error, psycopg2.errors.UndefinedTable):
            return _fail(_NO_SCHEMA)
        reason = connections.failure_reason(error)
        return _fail(f"cannot reach the database (DATABASE_URL): {reason}")
    try:
        with open_rejects(rejects_path) as rejects:
            return _Import(
                conn, source, rejects, rejects_path, batch_size, settings, configured_blocklist
            ).run()
    except RejectsFileRefused as error:
        return _fail(str(error))
    except OSError as error:
        return _fail(f"cannot write the rejects file {rejects_path}: {error.strerror}")
    finally:
        conn.close()
        source.close()


class RejectsFileRefused(Exception):
    """The rejects path names something the import must not write to."""


def open_rejects(path: str) -> IO[str]:
    """The rejects file, emptied, readable by its owner only.

    Never through a symbolic link (O_NOFOLLOW), and only a regular file of ours with no
    other name: a link planted in a shared folder must not make an import (run as root,
    say) overwrite another file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        descriptor = os.open(path, flags, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RejectsFileRefused(
                f"the rejects file {path} is a symbolic link: not followed; "
                "remove it or choose another --rejects path"
            ) from None
        raise
    try:
        found = os.fstat(descriptor)
        if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1 or found.st_uid != os.geteuid():
            raise RejectsFileRefused(
                f"the rejects file {path} is not a regular file of this user with a single "
                "name: not written; remove it or choose another --rejects path"
            )
        os.set_blocking(descriptor, True)
        os.ftruncate(descriptor, 0)
        os.fchmod(descriptor, 0o600)
        return os.fdopen(descriptor, "w", encoding="utf-8")
    except BaseException:
        os.close(descriptor)
        raise


def _connect(config):
    limits = Limits(config["STATEMENT_TIMEOUT_MS"], config["LOCK_TIMEOUT_MS"], idle_ms=0)
    conn = connections.connect(config, "identity-import", limits)
    try:
        with conn.cursor() as cur:
            repository.estimated_rows(cur)  # the schema is there
    except psycopg2.Error:
        conn.close()
        raise
    return conn


def _fail(message: str) -> int:
    click.echo(f"import: {message}", err=True)
    return EXIT_FAILED


class _Import:
    """Read the whole input (validating, listing rejects, sorting), then load it in
    createdAt order, one batch per transaction."""

    def __init__(
        self,
        conn,
        source: Source,
        rejects,
        rejects_path: str,
        batch_size: int,
        settings,
        configured,
    ):
        self.source, self.rejects, self.rejects_path = source, rejects, rejects_path
        self.batch_size = batch_size
        # The configured list and the values support has blocked, read once: the import
        # runs outside any request, on its own connection.
        stored = service_repository.blocked_values(conn)
        blocklist = StoredBlocklist(
            configured,
            load=lambda: stored,
            refresh_s=math.inf,
        )
        blocklist.refresh_now()
        self.validator = OrderValidator(
            blocklist, default_time=datetime.now(UTC), phone_region=settings["PHONE_REGION"]
        )
        self.loader = Loader(
            conn, f"import-{uuid.uuid4().hex[:12]}", settings["RETRY_BUDGET"]
        )
        self.tally = Tally()
        self.imported_up_to: datetime | None = None
        self.damage: DamagedInput | None = None
        self.stop_requested = False

    def run(self) -> int:
        previous_handler = signal.signal(signal.SIGINT, self._request_stop)
        try:
            with OrderSorter() as sorter:
                finished = self._read(sorter) and self._load(sorter)
        except UnreadableInput as error:
            return _fail(str(error))
        except SortFilesFailed as error:
            return _fail(f"{error}; nothing was imported")
        except KeyboardInterrupt:  # the second Ctrl-C: the batch in flight rolls back
            return _fail(f"aborted; {self._resume_hint()}")
        except BatchFailed:
            return _fail(f"gave up on a batch after conflicting writes; {self._resume_hint()}")
        except psycopg2.Error:
            return _fail(f"the database failed; {self._resume_hint()}")
        finally:
            signal.signal(signal.SIGINT, previous_handler)
        for line in self.tally.summary():
            click.echo(line)
        if self.tally.rejected:
            click.echo(f"rejected orders are listed in {self.rejects_path}")
        if self.damage is not None:
            return _fail(f"{self.damage}; the orders before it were imported")
        if not finished:
            click.echo(f"import: stopped at your request; {self._resume_hint()}", err=True)
            return EXIT_FAILED
        return EXIT_REJECTED if self.tally.rejected else EXIT_IMPORTED

    def _request_stop(self, _signum, _frame) -> None:
        """First Ctrl-C: finish the current batch, then stop. A second one stops at once
        (the open transaction rolls back)."""
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True
        click.echo(
            "\nimport: stopping after the current batch (Ctrl-C again to abort it)", err=True
        )

    def _resume_hint(self) -> str:
        done = (
            f"the orders up to createdAt {self.imported_up_to.isoformat()} are imported"
            if self.imported_up_to
            else "nothing was imported"
        )
        return (
            f"{done}. Run the same command again to finish: orders already imported are "
            "recognised and change nothing"
        )

    def _read(self, sorter: OrderSorter) -> bool:
        """Read and validate every order: rejects to their file, the others to the sorter.
        False when stopped by Ctrl-C. A damaged input ends the reading (self.damage):
        what was read before it is still imported."""
        progress = Progress(sys.stderr, "read", self.source.size)
        try:
            for raw in read_orders(self.source):
                item = raw if isinstance(raw, Reject) else self.validator.validate(raw)
                self.tally.read += 1
                if isinstance(item, Reject):
                    self._reject(item)
                else:
                    sorter.add(item)
                if self.tally.read % PROGRESS_EVERY == 0:
                    progress.update(self.tally.read, self.source.position())
                if self.stop_requested:
                    return False
        except DamagedInput as damage:
            self.damage = damage
        finally:
            progress.close()
        self.rejects.flush()
        return True

    def _load(self, sorter: OrderSorter) -> bool:
        """Load the orders in createdAt order; False when stopped by Ctrl-C."""
        progress = Progress(sys.stderr, "imported", None, total=sorter.count)
        loaded = 0
        try:
            batches = read_ahead(_batches(sorter.sorted_orders(), self.batch_size))
            with closing(batches):
                for batch in batches:
                    plan = self.loader.load(batch)
                    self.tally.add(plan.outcomes, len(plan.new_rows))
                    self.imported_up_to = batch[-1].created_at
                    loaded += len(batch)
                    progress.update(loaded)
                    if self.stop_requested:
                        return False
        finally:
            progress.close()
        return True

    def _reject(self, reject: Reject) -> None:
        self.tally.rejected += 1
        entry = {"line": reject.line, "code": reject.code, "message": reject.message}
        if reject.fields:
            entry["fields"] = reject.fields
        self.rejects.write(json.dumps(entry) + "\n")


def _batches(orders: Iterator[Order], size: int) -> Iterator[list[Order]]:
    batch: list[Order] = []
    for order in orders:
        batch.append(order)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
