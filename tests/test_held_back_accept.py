"""A worker held back from accepting (a sibling holds fewer connections: balance.py) still
takes a connection that waits at two looks 10 ms apart, unless that would take it over its
connection limit (identity/process/server.py, _Server._next_turn), one turn at a time."""

import socket
import time

import pytest

from identity.process import server


class _SiblingHoldsFewer:
    """A board on which this worker may never accept."""

    sibling_starting = False

    def may_accept(self, open_connections: int) -> bool:
        return False


@pytest.fixture
def held_back(app):
    listener = socket.create_server(("127.0.0.1", 0))
    built = server.create_server(app, listener, board=_SiblingHoldsFewer())
    client = socket.create_connection(listener.getsockname())
    yield built
    client.close()
    for channel in list(built.active_channels.values()):
        channel.close()
    built.close()
    built.task_dispatcher.shutdown()
    built.long_polls.shutdown()
    listener.close()


def _look(built) -> None:
    """One turn of the loop with a look at the listening socket due."""
    built.next_peek = 0.0
    assert built._next_turn() == server._HOLDING_BACK_POLL_S
    assert not built.readable()  # the loop's own poll leaves the listening socket alone


def test_a_connection_still_waiting_at_the_second_look_is_taken(held_back):
    _look(held_back)
    assert held_back.active_channels == {}  # seen once: left to the siblings
    assert held_back.seen_waiting
    time.sleep(server._HOLDING_BACK_POLL_S)
    _look(held_back)
    assert len(held_back.active_channels) == 1


def test_a_worker_at_its_connection_limit_takes_nothing(held_back):
    held_back.adj.connection_limit = len(held_back._map)
    for _ in range(3):
        _look(held_back)
        time.sleep(server._HOLDING_BACK_POLL_S)
    assert held_back.active_channels == {}
    assert not held_back.seen_waiting


def test_nothing_is_taken_while_a_sibling_is_starting(held_back):
    held_back.board.sibling_starting = True
    for _ in range(3):
        _look(held_back)
    assert held_back.active_channels == {}
    assert not held_back.seen_waiting
