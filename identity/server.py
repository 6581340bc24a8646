"""Serving with waitress: JSON logs, and a graceful stop on SIGTERM.

On SIGTERM the server stops accepting connections, answers 503 to any new request on a
connection that is already open, lets the requests in flight finish and their answers
go out, then stops its threads and closes the connection pool.
"""

import logging
import os
import signal
import threading
import time

import waitress
from flask import Flask
from pythonjsonlogger.json import JsonFormatter

from . import access
from .db import close_pool

DRAIN_TIMEOUT_S = 30
logger = logging.getLogger(__name__)


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


def _in_flight(app: Flask) -> float:
    registry = app.extensions["identity_metrics"].registry
    return registry.get_sample_value("identity_http_requests_in_flight") or 0


def _output_pending(server) -> bool:
    return any(getattr(channel, "total_outbufs_len", 0) for channel in list(server._map.values()))


def _drain(app: Flask, server) -> None:
    """Wait for requests in flight and their answers, then stop the main loop."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while (_in_flight(app) or _output_pending(server)) and time.monotonic() < deadline:
        time.sleep(0.01)
    # The main loop ends on KeyboardInterrupt, after which waitress stops its threads.
    os.kill(os.getpid(), signal.SIGINT)


def serve(app: Flask) -> None:
    configure_logging(app.config["LOG_LEVEL"])
    access.log_configuration(app)
    server = waitress.create_server(
        app,
        host=app.config["HOST"],
        port=app.config["PORT"],
        threads=app.config["THREADS"],
        ident="identity",
    )

    def stop_listening():
        # New connections are refused from now on. Runs inside the main loop, between
        # two polls: closing the socket under a running poll would break it.
        waitress.wasyncore.dispatcher.close(server)

    def on_sigterm(_signum, _frame):
        logger.info("SIGTERM: draining")
        app.extensions["identity_draining"] = True
        server.trigger.pull_trigger(stop_listening)
        threading.Thread(target=_drain, args=(app, server), daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C, and the end of a drain, stop the main loop, even when our parent started
    # us with SIGINT ignored (as shells do for background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logger.info("serving on http://%s:%s", app.config["HOST"], app.config["PORT"])
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # Ctrl-C or the end of a drain: the normal way to stop, not an error
    finally:
        close_pool(app)
        logger.info("stopped")
