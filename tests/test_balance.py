"""The board of open connections per worker (identity/process/balance.py), by itself:
who may accept, who counts as live, and what a worker can do to the supervisor."""

import os
import time

import pytest

from identity.process import balance
from identity.process.balance import STALE_AFTER_S, BoardSlot, ConnectionBoard


@pytest.fixture
def board(tmp_path):
    path = str(tmp_path / "connections")
    supervisor = ConnectionBoard(path, 3)
    workers = [BoardSlot(path, slot) for slot in range(3)]
    return supervisor, workers


def test_a_worker_accepts_only_while_no_live_sibling_holds_fewer(board):
    _, (first, second, third) = board
    assert first.may_accept(0) and second.may_accept(0) and third.may_accept(0)
    assert not first.may_accept(1)  # the others hold none
    assert not second.may_accept(1)  # the third holds none
    assert third.may_accept(1)  # the others hold one each
    time.sleep(balance._ANSWER_S)  # an answer stands that long while a count stays
    assert first.may_accept(1) and second.may_accept(1)  # all equal: each may take one


def test_with_hundreds_of_connections_a_worker_may_be_an_eighth_ahead(board):
    _, (first, second, _) = board
    second.may_accept(400)
    assert first.may_accept(450)
    assert not first.may_accept(451)


def test_a_silent_sibling_holds_nobody_back(board, monkeypatch):
    _, (first, second, third) = board
    second.may_accept(0)
    third.may_accept(5)
    assert not first.may_accept(3)
    later = time.monotonic() + STALE_AFTER_S + 1
    monkeypatch.setattr(balance.time, "monotonic", lambda: later)
    third.may_accept(5)  # the frozen one, second, wrote nothing since
    assert first.may_accept(5)


def test_a_draining_worker_holds_nobody_back_at_once(board):
    _, (first, second, _) = board
    second.may_accept(0)
    assert not first.may_accept(2)
    second.leave()
    assert first.may_accept(3)


def test_a_starting_worker_counts_as_live_with_no_connection_until_cleared(board):
    supervisor, (first, _, _) = board
    supervisor.hold(1)
    assert first.may_accept(0)
    assert not first.may_accept(1)
    assert first.sibling_starting
    supervisor.clear(1)
    assert first.may_accept(2)
    assert not first.sibling_starting


def test_an_answer_stands_while_the_count_is_unchanged_and_no_longer(board):
    supervisor, (first, _, _) = board
    assert first.may_accept(1)
    supervisor.hold(2)
    assert first.may_accept(1)  # the same count, within _ANSWER_S: the last answer
    time.sleep(balance._ANSWER_S)
    assert not first.may_accept(1)


def test_a_worker_that_shrinks_the_board_cannot_bring_the_supervisor_down(tmp_path):
    """The workers' account owns the file: the supervisor writes it with pwrite, and
    never maps it (a write to a mapping past the end of a shrunk file is a SIGBUS)."""
    path = str(tmp_path / "connections")
    supervisor = ConnectionBoard(path, 2)
    os.truncate(path, 0)
    supervisor.hold(1)
    supervisor.clear(0)
    assert os.path.getsize(path) == 2 * balance._SLOT.size
