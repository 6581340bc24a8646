"""Logging for every process of the service: one JSON object per line on stderr."""

import logging
from datetime import datetime

from pythonjsonlogger.json import JsonFormatter


class _Formatter(JsonFormatter):
    def formatTime(self, record, datefmt=None):
        """ISO 8601 with milliseconds and the UTC offset: 2026-12-04T21:20:01.123+01:00."""
        moment = datetime.fromtimestamp(record.created).astimezone()
        return moment.isoformat(timespec="milliseconds")


def json_formatter() -> JsonFormatter:
    """One JSON object per line: the record's time (with its time zone), level, logger,
    message and extras."""
    return _Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Waitress warns at every request while all threads are busy; under load that is
    # thousands of lines a second about one fact, which /metrics' latencies show anyway.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
