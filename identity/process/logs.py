"""Logging for every process of the service: one JSON object per line on stderr."""

import logging

from pythonjsonlogger.json import JsonFormatter


def json_formatter() -> JsonFormatter:
    """One JSON object per line: the record's time, level, logger, message and extras."""
    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Waitress warns at every request while all threads are busy; under load that is
    # thousands of lines a second about one fact, which /metrics' latencies show anyway.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
