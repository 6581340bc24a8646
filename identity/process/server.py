"""One worker process: waitress on the listening socket its supervisor hands over.

Limits hold against slow and hostile clients: waitress reads every request whole in its
event loop before a thread sees it, so a client that trickles bytes holds a socket, never
a thread; it may hold it for REQUEST_TIMEOUT_S at most (IDLE_TIMEOUT_S between requests),
and every worker holds at most CONNECTION_LIMIT sockets. Errors that waitress answers
itself (header or body too large, a malformed request) get the service's JSON error body.

On SIGTERM the worker stops accepting connections, answers 503 to any new request on a
connection that is already open, lets the requests in flight finish and their answers
go out, then stops its threads and closes the connection pool.
"""

import json
import logging
import os
import select
import signal
import socket
import threading
import time
from importlib.metadata import version
from typing import NoReturn

from flask import Flask
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask

from identity.database.connections import close_pool
from identity.web.api import LONG_POLL_ALLOWED

from .balance import BoardSlot
from .logs import configure_logging

# This module subclasses and reaches into waitress (tests/test_waitress_internals.py names
# every internal it uses): it runs only with the waitress it was written for.
WAITRESS_VERSION = "3.0.2"
DRAIN_TIMEOUT_S = 30
_ACCEPT_BATCH = 256
# While a worker holds back from accepting (balance.py), its loop looks again this often:
# the siblings that catch up with it cannot wake it.
_HOLDING_BACK_POLL_S = 0.01
# ...and this often it looks at the listening socket all the same: a sibling may write its
# slot and yet not accept (out of file descriptors, say). A connection seen waiting there
# is left _HOLDING_BACK_POLL_S more to the siblings; if one still waits then, it takes it
# (and looks again after as long, while connections wait).
_PEEK_EVERY_S = 1.0
# A lingering close (RFC 9112 §9.6) after an early refusal ends once the client has
# sent nothing for LINGER_IDLE_S, or after LINGER_MAX_S whatever it sends (nginx's
# lingering_timeout and lingering_time).
LINGER_IDLE_S = 5
LINGER_MAX_S = 30
_LINGER_READ_BYTES = 65536
# The supervisor passes the listening socket's file descriptor in this variable.
LISTEN_FD_VARIABLE = "IDENTITY_LISTEN_FD"
# ...and a file whose modification time the main loop renews every second: a worker
# whose loop stops (frozen, stuck) stops renewing it, and the supervisor replaces it.
HEARTBEAT_FILE_VARIABLE = "IDENTITY_HEARTBEAT_FILE"
# ...and the board of open connections per worker (balance.py), with this worker's slot.
BOARD_FILE_VARIABLE = "IDENTITY_BOARD_FILE"
BOARD_SLOT_VARIABLE = "IDENTITY_BOARD_SLOT"
logger = logging.getLogger(__name__)
client_log = logging.getLogger("identity.client")

# Our codes for the errors waitress answers before the app runs.
_WAITRESS_ERRORS = {
    400: ("bad_request", "the request could not be understood"),
    413: ("payload_too_large", "the request body is too large"),
    431: ("header_too_large", "the request header is too large"),
    501: ("not_implemented", "this transfer encoding is not supported"),
}


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


class _DrainingTask(WSGITask):
    """Once the drain has begun, every answer closes its connection (Connection: close):
    keep-alive clients reconnect, to another server, instead of sending their next
    request down a connection that is about to close. (A WSGI application may not set
    that hop-by-hop header itself.) The environ also says whether this thread may hold a
    long poll."""

    def build_response_header(self):
        if self.channel.server.draining:
            self.set_close_on_finish()
        return super().build_response_header()

    def get_environment(self):
        environ = super().get_environment()
        environ[LONG_POLL_ALLOWED] = getattr(_this_thread, "serves_long_polls", False)
        return environ


_this_thread = threading.local()


class _LongPollThreads(ThreadedTaskDispatcher):
    """LONG_POLLS threads beside waitress's THREADS, for GET /events only: a long poll
    waits up to 30 s, and on the shared threads a few of them starved the checkouts.

    A feed read goes here only when one of these threads is free for it (never queued
    behind a waiting poll); otherwise to the shared threads, where the route serves a
    read without wait and refuses a long poll with a 429."""

    def __init__(self, count: int):
        super().__init__()
        self.count, self.reserved, self._reserve_lock = count, 0, threading.Lock()
        self.set_thread_count(count)

    def handler_thread(self, thread_no):
        _this_thread.serves_long_polls = True
        super().handler_thread(thread_no)

    def try_add(self, channel) -> bool:
        with self._reserve_lock:
            if self.reserved >= self.count:
                return False
            self.reserved += 1
        self.add_task(_ReservedTask(channel, self._release))
        return True

    def _release(self) -> None:
        with self._reserve_lock:
            self.reserved -= 1


class _ReservedTask:
    def __init__(self, channel, on_done):
        self.channel, self.on_done = channel, on_done

    def service(self):
        try:
            self.channel.service()
        finally:
            self.on_done()


def _is_feed_read(request) -> bool:
    return request.command == "GET" and request.path == "/events"



def waitress_settings(config) -> dict:
    """Waitress's adjustments from the service's settings."""
    settings = {
        "threads": config["THREADS"],
        "ident": "identity",
        "connection_limit": config["CONNECTION_LIMIT"],
        "channel_timeout": config["IDLE_TIMEOUT_S"],
        # Idle and slow connections are looked for every second: a pass over every
        # connection, about 1 ms for 4,000 of them.
        "cleanup_interval": 1,
        "max_request_header_size": config["MAX_HEADER_BYTES"],
        # Waitress refuses a body of max_request_body_size bytes; MAX_BODY_BYTES is allowed.
        "max_request_body_size": config["MAX_CONTENT_LENGTH"] + 1,
        "backlog": config["LISTEN_BACKLOG"],
        # poll() instead of select(): select fails beyond 1,024 file descriptors.
        "asyncore_use_poll": True,
        # Without a trusted proxy the app reads no X-Forwarded-* header (the client address
        # is the socket's), so waitress need not strip them at every request.
        "clear_untrusted_proxy_headers": False,
    }
    if config["TRUSTED_PROXY"]:
        # Only this proxy's X-Forwarded-For counts; any other X-Forwarded-* is removed.
        settings["clear_untrusted_proxy_headers"] = True
        settings["trusted_proxy"] = config["TRUSTED_PROXY"]
        settings["trusted_proxy_headers"] = config["TRUSTED_PROXY_HEADERS"]
        settings["trusted_proxy_count"] = config["TRUSTED_PROXY_COUNT"]
    return settings


class _JsonErrorTask(ErrorTask):
    """Waitress's own error answers (400, 413, 431, 501) in the service's JSON shape."""

    def execute(self):
        error = self.request.error
        code, message = _WAITRESS_ERRORS.get(error.code, ("http_error", error.reason.lower()))
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.channel.linger_on_close = True
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    """A client connection that remembers when its current request began to arrive, and
    closes with a linger after an early refusal.

    A refusal (413, 431, 400) is often answered while the client is still sending the
    body: closing a socket with unread bytes makes the kernel send a reset, which
    destroys the answer on its way (measured: 10 to 24 of 30 clients that send a 2 MB
    body before reading got a reset instead of the 413). So, once the answer is sent, the
    connection is only half closed (our FIN follows the answer) and what the client still
    sends is read and dropped until it closes its side or stays silent."""

    task_class = _DrainingTask
    error_task_class = _JsonErrorTask
    request_began = 0.0
    linger_on_close = False  # set by an error answer
    lingering_since = 0.0  # when the half close happened; 0 while not lingering

    def handle_close(self):
        if self.linger_on_close and not self.lingering_since and self._half_close():
            return
        super().handle_close()

    def _half_close(self) -> bool:
        """Send our FIN after the answer and start lingering; False if there is nothing
        to linger for (an answer not sent whole, a socket already gone)."""
        if self.total_outbufs_len or self.socket is None:
            return False
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        self.lingering_since = self.last_activity = time.time()
        self.will_close = self.close_when_flushed = False
        self.request = None  # any bytes parsed after the refused request are dropped too
        return True

    def handle_read(self):
        if not self.lingering_since:
            return super().handle_read()
        try:
            if self.recv(_LINGER_READ_BYTES):  # dropped; an end of stream closes (recv)
                self.last_activity = time.time()
        except OSError:
            super().handle_close()

    def linger_over(self, now: float) -> bool:
        return bool(self.lingering_since) and (
            now - self.last_activity > LINGER_IDLE_S or now - self.lingering_since > LINGER_MAX_S
        )

    def received(self, data):
        if self.request is None:  # these bytes start a new request
            self.request_began = time.time()
        return super().received(data)

    def writable(self):
        # While a thread serves this connection's request, it sends the answer itself and
        # wakes the loop when it could not send everything (and at its end). Asking poll()
        # for writability meanwhile made the loop spin whenever it saw the answer half
        # written: 17 idle turns per request at concurrency 16, a pass over every
        # connection each. A buffer over the high-water mark still needs the loop's help.
        if (
            self.requests
            and self.total_outbufs_len <= self.adj.outbuf_high_watermark
            and not (self.will_close or self.close_when_flushed)
        ):
            return False
        return super().writable()


class _Server(TcpWSGIServer):
    """Waitress's server, which also closes connections whose request arrives too slowly,
    and accepts only while no sibling worker holds fewer connections (balance.py): as
    many waiting connections in one turn as its share allows, and, held back, one that
    waits too long (run)."""

    channel_class = _Channel
    request_timeout_s = 15
    draining = False  # set on SIGTERM: answers close their connections from then on
    heartbeat_file: str | None = None
    board: BoardSlot | None = None  # None: no siblings to balance with
    holding_back = False  # a sibling holds fewer connections: leave the next one to it
    next_peek = 0.0  # held back, when to look at the listening socket next
    seen_waiting = False  # the last look found a connection waiting: the next takes one

    def add_task(self, channel):
        if not (_is_feed_read(channel.requests[0]) and self.long_polls.try_add(channel)):
            super().add_task(channel)

    def run(self):
        """waitress's loop (wasyncore.loop), deciding before each poll whether to accept:
        a worker that holds back polls for 10 ms, not 1 s, and once a second, unless a
        sibling is still starting, looks at the listening socket: a connection that still
        waits 10 ms later, it takes."""
        poll = wasyncore.poll2 if self.adj.asyncore_use_poll else wasyncore.poll
        try:
            while self._map:
                poll(self._next_turn(), self._map)
        except (SystemExit, KeyboardInterrupt):
            self.task_dispatcher.shutdown()

    def _next_turn(self) -> float:
        """Decide whether this turn accepts; returns how long its poll may wait. Held
        back, the listening socket is left out of the poll and looked at here instead."""
        board = self.board
        if board is None or not self.accepting or self._may_accept():
            self.holding_back = self.seen_waiting = False
            self.next_peek = time.monotonic() + _PEEK_EVERY_S
            return self.adj.asyncore_loop_timeout
        self.holding_back = True
        now = time.monotonic()
        if board.sibling_starting:  # its share is left to it: nothing is taken meanwhile
            self.seen_waiting = False
        elif now >= self.next_peek:
            waiting = len(self._map) < self.adj.connection_limit and self._connection_waiting()
            if waiting and self.seen_waiting:  # it waited at the last look too: take one
                self._accept_held_back()
            self.seen_waiting = waiting
            self.next_peek = now + (_HOLDING_BACK_POLL_S if waiting else _PEEK_EVERY_S)
        return _HOLDING_BACK_POLL_S

    def _connection_waiting(self) -> bool:
        """Whether a connection waits to be accepted, without accepting it. The listening
        socket is open: close() clears `accepting` first, and _next_turn checks it."""
        poller = select.poll()
        poller.register(self.socket, select.POLLIN)
        return any(events & select.POLLIN for _, events in poller.poll(0))

    def _accept_held_back(self) -> None:
        """Accept one connection outside the loop's poll, whose dispatch would have caught
        what waitress lets through (a client gone before its address was read): logged,
        and the worker goes on."""
        try:
            self._accept_one()
        except OSError:
            logger.warning("accepting a waiting connection failed", exc_info=True)

    def readable(self):
        return super().readable() and not self.holding_back

    def _may_accept(self) -> bool:
        return self.board is None or self.board.may_accept(len(self.active_channels))

    def handle_accept(self):
        # Waitress accepts one connection per turn of its loop, and each turn looks at
        # every open connection: a burst of N connections took time quadratic in N
        # (measured: 4,000 at once kept a new client waiting over 10 s).
        for _ in range(_ACCEPT_BATCH):
            if len(self._map) >= self.adj.connection_limit or not self._may_accept():
                return
            if not self._accept_one():  # nothing left to accept
                return

    def _accept_one(self) -> bool:
        open_before = len(self._map)
        super().handle_accept()
        return len(self._map) > open_before

    def maintenance(self, now):
        super().maintenance(now)  # closes connections idle for longer than channel_timeout
        cutoff = now - self.request_timeout_s
        for channel in list(self.active_channels.values()):
            if channel.linger_over(now):
                channel.will_close = True  # the loop closes it: handle_write, handle_close
            elif channel.request is not None and channel.request_began < cutoff:
                channel.will_close = True
        if self.heartbeat_file:  # waitress runs this pass every second, busy or idle
            os.utime(self.heartbeat_file)


def _log_client_addresses(app: Flask) -> None:
    """At DEBUG, log the client address waitress hands the app (after any trusted proxy)."""
    wsgi_app = app.wsgi_app

    def logged(environ, start_response):
        client_log.debug(
            "client",
            extra={"remote_addr": environ.get("REMOTE_ADDR"), "path": environ.get("PATH_INFO")},
        )
        return wsgi_app(environ, start_response)

    app.wsgi_app = logged  # type: ignore[method-assign]  # Flask's way to wrap the WSGI app


def create_server(app: Flask, sock: socket.socket, board: BoardSlot | None = None) -> _Server:
    answers = _AnswersInFlight(app)
    adjustments = Adjustments(sockets=[sock], **waitress_settings(app.config))
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adjustments.threads)
    server = _Server(
        answers,
        map={},
        _sock=sock,
        dispatcher=dispatcher,
        adj=adjustments,
        bind_socket=False,
        sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()),
    )
    server.request_timeout_s = app.config["REQUEST_TIMEOUT_S"]
    server.long_polls = _LongPollThreads(app.config["LONG_POLLS"])
    server.heartbeat_file = os.environ.get(HEARTBEAT_FILE_VARIABLE)
    server.board = board
    server.answers = answers  # what the drain waits for
    return server



def _output_pending(server) -> bool:
    return any(getattr(channel, "total_outbufs_len", 0) for channel in list(server._map.values()))


def _drain(server: _Server, listening_closed: threading.Event) -> NoReturn:
    """Wait until every answer is in a send buffer and the buffers are sent, then stop.

    The SIGINT that stops the main loop waits for stop_listening to have run: waitress
    runs a trigger's thunks under a bare `except:`, so a KeyboardInterrupt raised while
    the thunk runs would be swallowed, and the worker would serve on, never stopping."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    listening_closed.wait(max(0.0, deadline - time.monotonic()))
    while (server.answers.count or _output_pending(server)) and time.monotonic() < deadline:
        time.sleep(0.01)
    # The main loop ends on KeyboardInterrupt, after which waitress stops its threads.
    # Sent again each second until the process ends: one that lands inside another thunk
    # of the trigger is swallowed the same way. (This thread is a daemon: it ends with us.)
    while True:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)


def serve(app: Flask, sock: socket.socket, board: BoardSlot | None = None) -> None:
    """Serve on an already listening socket until SIGTERM (drain) or SIGINT (stop)."""
    configure_logging(app.config["LOG_LEVEL"])
    if client_log.isEnabledFor(logging.DEBUG):
        _log_client_addresses(app)
    server = create_server(app, sock, board)

    listening_closed = threading.Event()

    def stop_listening():
        # New connections are refused from now on, once every worker has closed its copy
        # of the socket. Runs inside the main loop, between two polls: closing the socket
        # under a running poll would break it.
        wasyncore.dispatcher.close(server)
        if board:
            board.leave()
        listening_closed.set()

    def begin_drain():
        logger.info("SIGTERM: draining", extra={"pid": os.getpid()})
        app.extensions["identity_draining"] = True
        server.draining = True
        server.trigger.pull_trigger(stop_listening)
        _drain(server, listening_closed)

    # Ctrl-C, and the end of a drain, stop the main loop, even when our parent started
    # us with SIGINT ignored (as shells do for background jobs). Installed first: a
    # SIGTERM at once would otherwise end its drain with a SIGINT still ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The drain runs in a thread of its own: the handler interrupts the main loop, which
    # may hold the locks that logging and the loop's trigger take.
    signal.signal(
        signal.SIGTERM,
        lambda _signum, _frame: threading.Thread(target=begin_drain, daemon=True).start(),
    )
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # Ctrl-C or the end of a drain: the normal way to stop, not an error
    finally:
        server.long_polls.shutdown()
        close_pool(app)


def check_waitress_version(installed: str | None = None) -> None:
    """Exit with one line naming both versions when another waitress is installed."""
    found = installed or version("waitress")
    if found != WAITRESS_VERSION:
        raise SystemExit(
            f"identity needs waitress {WAITRESS_VERSION} (identity/process/server.py uses its"
            f" internals), found waitress {found}"
        )


def main() -> None:
    """A worker process, as the supervisor starts it."""
    from identity import create_app

    check_waitress_version()
    sock = socket.socket(fileno=int(os.environ[LISTEN_FD_VARIABLE]))
    board = None
    if BOARD_FILE_VARIABLE in os.environ:
        board = BoardSlot(os.environ[BOARD_FILE_VARIABLE], int(os.environ[BOARD_SLOT_VARIABLE]))
    serve(create_app(), sock, board)

