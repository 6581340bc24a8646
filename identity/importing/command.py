"""`flask --app identity import FILE`: load historical orders (see docs/import.md).

Exit status: 0 every order was imported, 1 some were rejected (listed in the rejects
file), 2 the import could not run or did not finish (no such file, no database, Ctrl-C).
"""

import json
import math
import signal
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
from .reader import Reject, Source, UnreadableInput, read_ahead, read_orders

DEFAULT_BATCH_SIZE = 1000
EXIT_IMPORTED, EXIT_REJECTED, EXIT_FAILED = 0, 1, 2
_NO_SCHEMA = "the database has no contact table: run make db-init"


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
        with open(rejects_path, "w", encoding="utf-8") as rejects:
            return _Import(
                conn, source, rejects, rejects_path, batch_size, settings, configured_blocklist
            ).run()
    except OSError as error:
        return _fail(f"cannot write the rejects file {rejects_path}: {error.strerror}")
    finally:
        conn.close()
        source.close()


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


@dataclass
class _Chunk:
    """A batch of valid orders and the rejects read along with it."""

    orders: list[Order] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    read: int = 0
    last_line: int = 0
    position: int = 0  # bytes of the input consumed when the chunk was complete

    def add(self, item: Order | Reject) -> None:
        if isinstance(item, Reject):
            self.rejects.append(item)
        else:
            self.orders.append(item)
        self.read += 1
        self.last_line = item.line


class _Import:
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
        self.validator = OrderValidator(blocklist, default_time=datetime.now(UTC))
        self.loader = Loader(
            conn, f"import-{uuid.uuid4().hex[:12]}", settings["RETRY_BUDGET"]
        )
        self.tally = Tally()
        self.newest_imported: datetime | None = None
        self.last_line = 0
        self.stop_requested = False

    def run(self) -> int:
        previous_handler = signal.signal(signal.SIGINT, self._request_stop)
        progress = Progress(sys.stderr, self.source.size)
        try:
            finished = self._batches(progress)
        except UnreadableInput as error:
            return _fail(str(error))
        except KeyboardInterrupt:  # the second Ctrl-C: the batch in flight rolls back
            return _fail(f"aborted; {self._resume_hint()}")
        except BatchFailed:
            return _fail(f"gave up on a batch after conflicting writes; {self._resume_hint()}")
        except psycopg2.Error:
            return _fail(f"the database failed; {self._resume_hint()}")
        finally:
            progress.close()
            signal.signal(signal.SIGINT, previous_handler)
        for line in self.tally.summary():
            click.echo(line)
        if self.tally.rejected:
            click.echo(f"rejected orders are listed in {self.rejects_path}")
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
        return (
            f"orders up to line {self.last_line:,} are imported. Run the same command again "
            "to finish: orders already imported are recognised and change nothing"
        )

    def _batches(self, progress: Progress) -> bool:
        """Load every chunk of the input; False when stopped by Ctrl-C."""
        with closing(read_ahead(self._chunks())) as chunks:
            for chunk in chunks:
                for reject in chunk.rejects:
                    self._reject(reject)
                if chunk.orders:
                    self._load(chunk.orders)
                self.tally.read += chunk.read
                self.last_line = chunk.last_line
                progress.update(self.tally, chunk.position)
                if self.stop_requested:
                    return False
        return True

    def _chunks(self) -> Iterator[_Chunk]:
        """The input cut into batches of valid orders, with the rejects read on the way."""
        chunk = _Chunk()
        for item in read_orders(self.source):
            chunk.add(item if isinstance(item, Reject) else self.validator.validate(item))
            if len(chunk.orders) >= self.batch_size:
                chunk.position = self.source.position()
                yield chunk
                chunk = _Chunk()
        chunk.position = self.source.position()
        yield chunk

    def _load(self, batch: list[Order]) -> None:
        if self.newest_imported is not None:
            self.tally.out_of_order += sum(
                order.created_at < self.newest_imported for order in batch
            )
        plan = self.loader.load(batch)
        self.tally.add(plan.outcomes, len(plan.new_rows))
        newest = max(order.created_at for order in batch)
        self.newest_imported = max(newest, self.newest_imported or newest)

    def _reject(self, reject: Reject) -> None:
        self.tally.rejected += 1
        entry = {"line": reject.line, "code": reject.code, "message": reject.message}
        if reject.fields:
            entry["fields"] = reject.fields
        self.rejects.write(json.dumps(entry) + "\n")
