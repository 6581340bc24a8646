"""Read orders from CSV (with a header) or NDJSON, plain or gzip, a file or standard input.

Every order comes out as a RawOrder: its line number and its three fields as found in
the input (unvalidated). A line that cannot be read as an order at all (malformed JSON,
not an object, not CSV, longer than MAX_LINE_CHARS) comes out as a Reject straight away.

Memory stays bounded whatever the input: lines are read at most MAX_LINE_CHARS at a time,
and a longer line is skipped piece by piece, never held whole (a small .gz can expand to
one line of gigabytes). A CSV field, which may span lines, stops at the csv module's
field limit of the same size.
"""

import csv
import gzip
import io
import json
import sys
import threading
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Full, Queue
from typing import IO

COLUMNS = ("email", "phoneNumber", "createdAt")

# The longest line or CSV field read: the csv module's own default field limit. An order
# is a few hundred characters at most.
MAX_LINE_CHARS = 131_072
_TOO_LONG = f"the line is longer than {MAX_LINE_CHARS:,} characters"
_NOT_CSV = f"the line is not valid CSV, or a field is longer than {MAX_LINE_CHARS:,} characters"


class UnreadableInput(Exception):
    """The input cannot be imported at all (exit status 2); the message says why."""


class DamagedInput(Exception):
    """The input could not be read to its end (a truncated or corrupt .gz, a read error)
    after line `line`: what was read before stands (exit status 2)."""

    def __init__(self, line: int, reason: str):
        super().__init__(f"the input could not be read after line {line:,}: {reason}")
        self.line = line


@dataclass(frozen=True, slots=True)
class RawOrder:
    line: int
    email: object
    phone_number: object
    created_at: object


@dataclass(frozen=True, slots=True)
class Reject:
    line: int
    code: str
    message: str
    fields: dict | None = None


class Source:
    """An opened input: text lines, and how far through the underlying bytes we are."""

    def __init__(self, path: str):
        self.name = path
        if path == "-":
            self._raw = sys.stdin.buffer
            if not hasattr(self._raw, "peek"):  # a replaced stdin (tests, embedding)
                self._raw = io.BufferedReader(self._raw)
            self.size = None
        else:
            try:
                self._raw = open(path, "rb")
            except OSError as error:
                raise UnreadableInput(f"cannot open {path}: {error.strerror}") from None
            self.size = Path(path).stat().st_size
        binary = self._raw
        if path.endswith(".gz") or (path == "-" and self._raw.peek(2)[:2] == b"\x1f\x8b"):
            binary = gzip.GzipFile(fileobj=self._raw)
        # Undecodable bytes survive as lone surrogates, which validation rejects (SPEC §4)
        # instead of the whole import stopping on one bad line.
        self.text = io.TextIOWrapper(
            binary, encoding="utf-8", errors="surrogateescape", newline=""
        )
        try:
            self.is_ndjson = self._looks_like_ndjson(path)
        except (EOFError, zlib.error, OSError):  # the first bytes, when the name does not tell
            self.close()
            raise UnreadableInput(f"cannot read {path}: damaged or not gzip data") from None

    def _looks_like_ndjson(self, path: str) -> bool:
        stem = path[:-3] if path.endswith(".gz") else path
        if stem.endswith((".ndjson", ".jsonl", ".json")):
            return True
        if stem.endswith(".csv"):
            return False
        return self.text.buffer.peek(1)[:1] == b"{"  # standard input, or no telling suffix

    def position(self) -> int:
        """Bytes of the underlying file consumed so far (compressed bytes for gzip)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        if self.name != "-":
            self._raw.close()


def read_orders(source: Source) -> Iterator[RawOrder | Reject]:
    lines = _BoundedLines(source.text)
    return _ndjson(lines) if source.is_ndjson else _csv(lines)


class _BoundedLines:
    """The input's lines, each at most MAX_LINE_CHARS long. A longer line comes out as
    an empty line (so line numbers stay true) and its number goes to `too_long`."""

    def __init__(self, text: IO[str]):
        self.text = text
        self.number = 0
        self.too_long: list[int] = []

    def __iter__(self) -> Iterator[str]:
        while line := self._read():
            self.number += 1
            if len(line) == MAX_LINE_CHARS and line[-1] not in "\r\n":
                while (rest := self._read()) and rest[-1] not in "\r\n":
                    pass  # the rest of the line, dropped piece by piece
                self.too_long.append(self.number)
                line = "\n"
            yield line

    def _read(self) -> str:
        try:
            return self.text.readline(MAX_LINE_CHARS)
        except EOFError:  # gzip: the compressed stream stops before its end marker
            raise DamagedInput(self.number, "the compressed data is truncated") from None
        except (zlib.error, gzip.BadGzipFile):
            raise DamagedInput(self.number, "the compressed data is damaged") from None
        except OSError as error:
            raise DamagedInput(self.number, error.strerror or "read error") from None

    def rejects(self) -> Iterator[Reject]:
        """Rejects for the lines found too long since the last call."""
        while self.too_long:
            yield Reject(self.too_long.pop(0), "line_too_long", _TOO_LONG)


def _csv(lines: _BoundedLines) -> Iterator[RawOrder | Reject]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    header = [name.strip().lstrip("\ufeff") for name in header]
    if "email" not in header and "phoneNumber" not in header:
        raise UnreadableInput("the CSV header names neither email nor phoneNumber")
    where = [header.index(name) if name in header else None for name in COLUMNS]
    while True:
        record: list[str] | Reject
        first_line = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error:  # a field over the limit, a NUL: the reader goes on at the next
            # line (inside a quoted field spanning lines, that line may not parse either)
            record = Reject(first_line, "malformed_csv", _NOT_CSV)
        yield from lines.rejects()
        if isinstance(record, Reject):
            yield record
        elif record:
            yield RawOrder(reader.line_num, *(_cell(record, index) for index in where))
    yield from lines.rejects()


def _cell(record: list[str], index: int | None) -> str | None:
    return record[index] if index is not None and index < len(record) else None


def _ndjson(lines: _BoundedLines) -> Iterator[RawOrder | Reject]:
    for line in lines:
        yield from lines.rejects()
        if not line.strip():
            continue
        try:
            document = json.loads(line, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            yield Reject(lines.number, "malformed_json", "the line is not valid JSON")
            continue
        if not isinstance(document, dict):
            yield Reject(lines.number, "not_an_object", "the line must be a JSON object")
            continue
        yield RawOrder(lines.number, *(document.get(name) for name in COLUMNS))


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: RFC 8259 has neither


def read_ahead(items: Iterator, depth: int = 2) -> Generator:
    """Iterate `items` in a background thread, up to `depth` items ahead of the consumer.

    Reading and validating the next batch then overlaps the database's work on the
    current one (the driver releases the GIL while it waits). An exception in the thread
    is raised in the consumer; closing the iterator stops the thread."""
    queue: Queue = Queue(depth)
    stop = threading.Event()

    def put(message) -> bool:
        while not stop.is_set():
            try:
                queue.put(message, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            put(("error", error))
            return
        put(("done", None))

    thread = threading.Thread(target=produce, name="import-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = queue.get()
            if kind == "error":
                raise value
            if kind == "done":
                return
            yield value
    finally:
        stop.set()
        thread.join()
