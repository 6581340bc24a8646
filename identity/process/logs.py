"""Logging for every process of the service: one JSON object per line on stderr."""

import logging
import math
from datetime import datetime

from pythonjsonlogger.json import JsonFormatter


class _Formatter(JsonFormatter):
    """The date, time and offset are worked out once a second, not at every line (the
    access log writes one per request): a handler formats under its lock, one record at a
    time."""

    _second: int | None = None
    _date_and_time = _offset = ""

    def formatTime(self, record, datefmt=None):
        """ISO 8601 with milliseconds and the UTC offset: 2026-12-04T21:20:01.123+01:00.
        As datetime.fromtimestamp(...).isoformat(timespec="milliseconds") writes it: the
        time rounded to the microsecond, then cut to the millisecond."""
        fraction, whole = math.modf(record.created)  # datetime's own rounding steps
        second, microsecond = divmod(int(whole) * 1_000_000 + round(fraction * 1e6), 1_000_000)
        if second != self._second:
            moment = datetime.fromtimestamp(second).astimezone().isoformat()
            self._second, self._date_and_time, self._offset = second, moment[:19], moment[19:]
        return f"{self._date_and_time}.{microsecond // 1000:03d}{self._offset}"


def json_formatter() -> JsonFormatter:
    """One JSON object per line: the record's time (with its time zone), level, logger,
    message and extras."""
    return _Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # No line names its thread or process, so records need not look them up (the
    # "Optimization" section of Python's Logging HOWTO): the access log writes one per request.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # Waitress warns at every request while all threads are busy; under load that is
    # thousands of lines a second about one fact, which /metrics' latencies show anyway.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
