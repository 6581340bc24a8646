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

The board is one small file in the supervisor's private folder: one slot per worker
position, holding the worker's open connections and when it last wrote them
(CLOCK_MONOTONIC, which every process on the machine shares). Each worker maps it into
memory, writes its own slot and reads the others'. A slot not written for STALE_AFTER_S
belongs to a worker that is frozen or dead, and holds nobody back; a draining worker
clears its slot. The supervisor marks the slots of the workers it starts with as
starting (STARTING) until they serve, so that the first to run leave the others their
share; it writes with pwrite and never maps the file, which the workers' account owns
and could shrink under a mapping. Reads and writes take no lock: a decision made on a
count one connection old costs nothing, and the loop soon decides again.
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
# The count of a worker that the supervisor has started and that does not serve yet.
STARTING = -1


class ConnectionBoard:
    """The supervisor's side: it creates the board, marks the workers it starts with as
    starting until they serve, and clears the slot of a worker that died."""

    def __init__(self, path: str, workers: int, owner: tuple[int, int] | None = None):
        """A new file of `workers` empty slots at path, which `owner` (uid, gid) may write."""
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.ftruncate(self._fd, _SLOT.size * workers)
        if owner:
            os.fchown(self._fd, *owner)

    def clear(self, slot: int) -> None:
        """The slot's worker is gone, or took too long to start: it holds nobody back."""
        os.pwrite(self._fd, _SLOT.pack(0, 0.0), slot * _SLOT.size)

    def hold(self, slot: int) -> None:
        """The slot's worker is still starting: it counts as live, with no connection."""
        os.pwrite(self._fd, _SLOT.pack(STARTING, time.monotonic()), slot * _SLOT.size)


class BoardSlot:
    """A worker's side: its own slot, which it writes, and its siblings', which it reads."""

    def __init__(self, path: str, slot: int):
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            self._mapped = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        self._slot = slot
        self._published, self._answer, self._answer_until = -1, True, 0.0
        self.sibling_starting = False  # as of the last answer

    def may_accept(self, connections: int) -> bool:
        """Publish this worker's open connections; True when it may accept one more.

        The loop asks at every turn, thousands of times a second under load: while its
        count stays the same, the last answer stands for _ANSWER_S."""
        now = time.monotonic()
        if connections == self._published and now < self._answer_until:
            return self._answer
        _SLOT.pack_into(self._mapped, self._slot * _SLOT.size, connections, now)
        siblings = self._live_siblings(now)
        least = min((max(count, 0) for count in siblings), default=None)
        self.sibling_starting = STARTING in siblings
        self._published, self._answer_until = connections, now + _ANSWER_S
        self._answer = least is None or connections <= least + least // _SLACK_DIVISOR
        return self._answer

    def leave(self) -> None:
        """This worker accepts no more (its drain has begun): it holds nobody back."""
        _SLOT.pack_into(self._mapped, self._slot * _SLOT.size, 0, 0.0)

    def _live_siblings(self, now: float) -> list[int]:
        """The connections of each sibling that wrote its slot lately (STARTING: none yet)."""
        return [
            connections
            for slot, (connections, written) in enumerate(_SLOT.iter_unpack(self._mapped))
            if slot != self._slot and now - written < STALE_AFTER_S
        ]
