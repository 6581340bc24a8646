"""Least-connections accept: the workers share one listening socket, and a worker accepts
a new connection only while it holds no more open connections than the least loaded of
its live siblings.

Why: keep-alive connections stay with the worker that accepted them, and which worker
accepts from a shared socket is a race that the worker already running wins. On a
freshly started service every connection of a burst went to one worker (12 of 12 probes,
`WORKERS=2` and `4`), which served alone while the others idled (docs/benchmarks.md).
One `SO_REUSEPORT` socket per worker would spread connections by a hash, unevenly, and
strand the connections queued at a worker that hangs; with a shared socket a sibling
still takes them.

The board is one small file that the supervisor creates and every worker maps into
memory: one slot per worker position, holding the worker's open connections and when its
main loop last wrote them (CLOCK_MONOTONIC, which every process on the machine shares).
A slot not written for STALE_AFTER_S belongs to a worker that is frozen, dead or
draining, and does not hold the others back. Reads and writes take no lock: a decision
made on a count one connection old costs nothing, and the next turn of the loop decides
again.
"""

import mmap
import os
import struct
import time

_SLOT = struct.Struct("=qd")  # open connections, when they were written (time.monotonic())
# A worker's loop turns at least once a second, idle or busy (waitress's poll timeout).
STALE_AFTER_S = 3.0
# How many connections more than the least loaded sibling a worker may hold: one at few
# connections; about 12 % at hundreds, so that a burst is still accepted many at a turn
# (each turn of the loop looks at every open connection).
_SLACK_DIVISOR = 8
# How long an answer stands while the worker's own count does not change.
_ANSWER_S = 0.005


class ConnectionBoard:
    """The supervisor's side: it creates the board, holds the slots of the workers it
    starts with until they serve, and clears the slot of a worker that died."""

    def __init__(self, path: str, workers: int, owner: tuple[int, int] | None = None):
        """A new file of `workers` empty slots at path, which `owner` (uid, gid) may write."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, _SLOT.size * workers)
            if owner:
                os.fchown(fd, *owner)
            self._mapped = mmap.mmap(fd, _SLOT.size * workers)
        finally:
            os.close(fd)

    def clear(self, slot: int) -> None:
        """The slot's worker is gone: it holds nobody back."""
        _clear(self._mapped, slot)

    def hold(self, slot: int) -> None:
        """The slot's worker is still starting: it counts as live, with no connection, so
        that the siblings that run first leave it its share of the first connections."""
        _SLOT.pack_into(self._mapped, slot * _SLOT.size, 0, time.monotonic())


class BoardSlot:
    """A worker's side: its own slot, which it writes, and its siblings', which it reads."""

    def __init__(self, path: str, slot: int):
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            self._mapped = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        self._offset = slot * _SLOT.size
        self._published, self._answer, self._answer_until = -1, True, 0.0

    def may_accept(self, connections: int) -> bool:
        """Publish this worker's open connections; True when it may accept one more.

        The loop asks at every turn, thousands of times a second under load: while its
        count stays the same, the last answer stands for _ANSWER_S."""
        now = time.monotonic()
        if connections == self._published and now < self._answer_until:
            return self._answer
        _SLOT.pack_into(self._mapped, self._offset, connections, now)
        least = self._least_loaded_sibling(now)
        self._published, self._answer_until = connections, now + _ANSWER_S
        self._answer = least is None or connections <= least + least // _SLACK_DIVISOR
        return self._answer

    def leave(self) -> None:
        """This worker accepts no more (its drain has begun)."""
        _clear(self._mapped, self._offset // _SLOT.size)

    def _least_loaded_sibling(self, now: float) -> int | None:
        mine = self._offset // _SLOT.size
        live = [
            connections
            for slot, (connections, written) in enumerate(_SLOT.iter_unpack(self._mapped))
            if slot != mine and now - written < STALE_AFTER_S
        ]
        return min(live, default=None)


def _clear(mapped: mmap.mmap, slot: int) -> None:
    _SLOT.pack_into(mapped, slot * _SLOT.size, 0, 0.0)
