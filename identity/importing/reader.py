"""Read orders from CSV (with a header) or NDJSON, plain or gzip, a file or standard input.

Every order comes out as a RawOrder: its line number and its three fields as found in
the input (unvalidated). A line that cannot be read as an order at all (malformed JSON,
not an object) comes out as a Reject straight away.
"""

import csv
import gzip
import io
import json
import sys
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Full, Queue
from typing import IO

COLUMNS = ("email", "phoneNumber", "createdAt")


class UnreadableInput(Exception):
    """The input cannot be imported at all (exit status 2); the message says why."""


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
        self.is_ndjson = self._looks_like_ndjson(path)

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
    return _ndjson(source.text) if source.is_ndjson else _csv(source.text)


def _csv(text: IO[str]) -> Iterator[RawOrder | Reject]:
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    header = [name.strip().lstrip("\ufeff") for name in header]
    if "email" not in header and "phoneNumber" not in header:
        raise UnreadableInput("the CSV header names neither email nor phoneNumber")
    where = [header.index(name) if name in header else None for name in COLUMNS]
    for record in reader:
        if not record:
            continue
        yield RawOrder(reader.line_num, *(_cell(record, index) for index in where))


def _cell(record: list[str], index: int | None) -> str | None:
    return record[index] if index is not None and index < len(record) else None


def _ndjson(text: IO[str]) -> Iterator[RawOrder | Reject]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            yield Reject(number, "malformed_json", "the line is not valid JSON")
            continue
        if not isinstance(document, dict):
            yield Reject(number, "not_an_object", "the line must be a JSON object")
            continue
        yield RawOrder(number, *(document.get(name) for name in COLUMNS))


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
