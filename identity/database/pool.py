"""A fixed-size pool of database connections whose every use ends by a deadline.

Why not psycopg2's ThreadedConnectionPool: it opens connections while holding its one
lock, so against a database that accepts connections but never answers, concurrent
requests connect one after another and the last waits for all the others; and nothing
on the client side stops a statement whose backend never answers. Here:

- A request first takes one of `size` slots (waiting for one until its deadline), then
  an idle connection, or opens a new one. Connecting happens under no lock, in a thread
  of its own: the request waits for it until its deadline and then gives up; a connection
  that arrives later joins the idle ones. The slot is given back on every path, so the
  pool never holds more than `size` connections and never loses a slot.
- While a request holds a connection, a watchdog thread knows the request's deadline.
  When it passes, the watchdog shuts the connection's socket down: whatever the request
  was waiting for (a frozen backend, a lost network, a lock) fails at once with a
  connection error, and the connection is thrown away when it comes back.
- A connection comes back clean (the caller rolls back first) or is closed.
"""

import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from .transaction import Connection


class NoFreeConnection(Exception):
    """Every slot stayed taken until the deadline."""


class ConnectTimeout(Exception):
    """A new connection was not ready by the deadline."""


class ServiceConnection(Connection):
    """An autocommit connection that carries its attempt's limits (transaction.Limits).

    It keeps a duplicate of its socket's descriptor so that the watchdog can shut the
    socket down from another thread: the duplicate stays valid even if libpq closes its
    own descriptor meanwhile, so the watchdog can never hit a reused descriptor number."""

    def __init__(self, dsn, *args, **kwargs):
        super().__init__(dsn, *args, **kwargs)
        self.autocommit = True
        self.cut_by_watchdog = False
        self._guard = socket.socket(fileno=os.dup(self.fileno()))

    def cut(self) -> None:
        """Shut the socket down: a thread blocked on it gets a connection error at once."""
        self.cut_by_watchdog = True
        try:
            self._guard.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the peer

    def close(self) -> None:
        super().close()
        self._guard.close()  # the last descriptor: only now does the TCP connection end


class _Watchdog:
    """One thread that cuts the connections whose holder's deadline has passed."""

    def __init__(self):
        self._changed = threading.Condition()
        self._watched: dict[ServiceConnection, float] = {}  # at most `size` entries
        self._next_wake = float("inf")
        self._thread: threading.Thread | None = None
        self._stopping = False

    def watch(self, conn: ServiceConnection, expires: float) -> None:
        with self._changed:
            self._watched[conn] = expires
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
                self._thread.start()
            if expires < self._next_wake:
                self._changed.notify()

    def forget(self, conn: ServiceConnection) -> None:
        """After this returns, the watchdog no longer touches conn."""
        with self._changed:
            self._watched.pop(conn, None)

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while not self._stopping:
                now = time.monotonic()
                for conn, expires in list(self._watched.items()):
                    if expires <= now:
                        del self._watched[conn]
                        conn.cut()
                self._next_wake = min(self._watched.values(), default=float("inf"))
                self._changed.wait(self._next_wake - now if self._watched else None)


class Pool:
    def __init__(self, connect: Callable[[], ServiceConnection], size: int, waiting_gauge):
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[ServiceConnection] = []  # last in, first out: the warmest first
        self._lock = threading.Lock()  # guards _idle and _closed only, never held for I/O
        self._closed = False
        self._watchdog = _Watchdog()
        self._waiting = waiting_gauge

    def checkout(self, expires: float) -> ServiceConnection:
        """A connection for the caller alone, watched until it is given back.

        Raises NoFreeConnection or ConnectTimeout at the deadline, or the error that
        connecting raised."""
        self._take_slot(expires)
        try:
            conn = self._take_idle() or self._open(expires)
        except ConnectTimeout:
            raise  # the slot now belongs to the connection still being opened
        except BaseException:
            self._slots.release()
            raise
        self._watchdog.watch(conn, expires)
        return conn

    def give_back(self, conn: ServiceConnection, broken: bool) -> None:
        self._watchdog.forget(conn)
        self._keep_or_close(conn, broken or conn.cut_by_watchdog)
        self._slots.release()

    def close(self) -> None:
        """Close the idle connections; connections in use are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        self._watchdog.stop()

    def _take_slot(self, expires: float) -> None:
        if self._slots.acquire(blocking=False):
            return
        self._waiting.inc()
        try:
            if not self._slots.acquire(timeout=max(0.0, expires - time.monotonic())):
                raise NoFreeConnection()
        finally:
            self._waiting.dec()

    def _take_idle(self) -> ServiceConnection | None:
        with self._lock:
            idle = self._idle.pop() if self._idle else None
        if idle is not None and idle.closed:  # the server ended it while it was idle
            idle.close()
            return self._take_idle()
        return idle

    def _open(self, expires: float) -> ServiceConnection:
        pending: Future = Future()

        def connect() -> None:
            try:
                pending.set_result(self._connect())
            except BaseException as error:
                pending.set_exception(error)

        threading.Thread(target=connect, name="db-connect", daemon=True).start()
        try:
            return pending.result(timeout=max(0.0, expires - time.monotonic()))
        except FutureTimeout:
            pending.add_done_callback(self._adopt_late_connection)
            raise ConnectTimeout() from None

    def _adopt_late_connection(self, pending: Future) -> None:
        """A connection nobody waits for any more joins the idle ones; its slot is freed."""
        if pending.exception() is None:
            self._keep_or_close(pending.result(), broken=False)
        self._slots.release()

    def _keep_or_close(self, conn: ServiceConnection, broken: bool) -> None:
        with self._lock:
            if not (broken or conn.closed or self._closed):
                self._idle.append(conn)
                return
        conn.close()
