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
import waitress.channel
import waitress.task
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


class _AnswersInFlight:
    """WSGI middleware: counts requests until waitress has taken their whole answer.

    waitress closes the answer's iterable once it has written all of it to the
    connection's send buffer; Flask's own bookkeeping ends earlier, when the view
    returns, before a byte is written."""

    def __init__(self, app):
        self.app, self.count, self._lock = app, 0, threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            self.count += 1
        try:
            answer = self.app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return _ClosingIterable(answer, self._done)

    def _done(self) -> None:
        with self._lock:
            self.count -= 1


class _ClosingIterable:
    def __init__(self, answer, on_close):
        self.answer, self.on_close = answer, on_close

    def __iter__(self):
        return iter(self.answer)

    def close(self) -> None:
        try:
            if hasattr(self.answer, "close"):
                self.answer.close()
        finally:
            self.on_close()


class _DrainingTask(waitress.task.WSGITask):
    """Once the drain has begun, every answer closes its connection (Connection: close):
    keep-alive clients reconnect, to another server, instead of sending their next
    request down a connection that is about to close. (A WSGI application may not set
    that hop-by-hop header itself.)"""

    def build_response_header(self):
        if self.channel.server.draining:
            self.set_close_on_finish()
        return super().build_response_header()


class _DrainingChannel(waitress.channel.HTTPChannel):
    task_class = _DrainingTask


def _output_pending(server) -> bool:
    return any(getattr(channel, "total_outbufs_len", 0) for channel in list(server._map.values()))


def _drain(answers: _AnswersInFlight, server) -> None:
    """Wait until every answer is in a send buffer and the buffers are sent, then stop."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while (answers.count or _output_pending(server)) and time.monotonic() < deadline:
        time.sleep(0.01)
    # The main loop ends on KeyboardInterrupt, after which waitress stops its threads.
    os.kill(os.getpid(), signal.SIGINT)


def serve(app: Flask) -> None:
    configure_logging(app.config["LOG_LEVEL"])
    access.log_configuration(app)
    answers = _AnswersInFlight(app)
    server = waitress.create_server(
        answers,
        host=app.config["HOST"],
        port=app.config["PORT"],
        threads=app.config["THREADS"],
        ident="identity",
    )
    server.channel_class = _DrainingChannel
    server.draining = False

    def stop_listening():
        # New connections are refused from now on. Runs inside the main loop, between
        # two polls: closing the socket under a running poll would break it.
        waitress.wasyncore.dispatcher.close(server)

    def on_sigterm(_signum, _frame):
        logger.info("SIGTERM: draining")
        app.extensions["identity_draining"] = True
        server.draining = True
        server.trigger.pull_trigger(stop_listening)
        threading.Thread(target=_drain, args=(answers, server), daemon=True).start()

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
