"""Every waitress internal identity/process/server.py relies on, by name.

The server subclasses waitress's server, channel and tasks and reads their attributes;
none of that is waitress's public API. On another waitress version these tests say which
internal went missing, and the server refuses to start (check_waitress_version)."""

import configparser
import inspect
import socket
from importlib.metadata import version

import pytest
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask
from waitress.utilities import (
    BadRequest,
    RequestEntityTooLarge,
    RequestHeaderFieldsTooLarge,
    ServerNotImplemented,
)

from identity.config import PROJECT_ROOT
from identity.process import server

INSTALLED = version("waitress")

# (class, attribute): methods server.py overrides or calls, class attributes it sets.
CLASS_MEMBERS = [
    (TcpWSGIServer, "channel_class"),  # _Server sets it
    (TcpWSGIServer, "handle_accept"),  # _Server overrides it, calls it per connection
    (TcpWSGIServer, "maintenance"),  # _Server overrides it (idle-connection cleanup)
    (TcpWSGIServer, "readable"),  # _Server overrides it: accepts only when the board allows
    (TcpWSGIServer, "run"),  # _Server overrides it: waitress's loop, with its own timeout
    (TcpWSGIServer, "add_task"),  # _Server overrides it: feed reads to the long-poll threads
    (HTTPChannel, "handle_close"),  # _Channel overrides it: the lingering close
    (HTTPChannel, "handle_read"),  # _Channel overrides it: drops what arrives while lingering
    (HTTPChannel, "service"),  # _ReservedTask calls it on a long-poll thread
    (wasyncore.dispatcher, "recv"),  # _Channel reads with it while lingering
    (HTTPChannel, "task_class"),  # _Channel sets _DrainingTask
    (HTTPChannel, "error_task_class"),  # _Channel sets _JsonErrorTask
    (HTTPChannel, "received"),  # _Channel overrides it: when a request began
    (HTTPChannel, "writable"),  # _Channel overrides it: no spinning on half-sent answers
    (WSGITask, "build_response_header"),  # _DrainingTask overrides it
    (WSGITask, "set_close_on_finish"),  # _DrainingTask: Connection: close while draining
    (WSGITask, "get_environment"),  # _DrainingTask adds whether a long poll may wait
    (ErrorTask, "execute"),  # _JsonErrorTask overrides it
    (ErrorTask, "write"),
    (ThreadedTaskDispatcher, "set_thread_count"),  # create_server, _LongPollThreads
    (ThreadedTaskDispatcher, "handler_thread"),  # _LongPollThreads overrides it
    (ThreadedTaskDispatcher, "add_task"),  # _LongPollThreads.try_add
    (ThreadedTaskDispatcher, "shutdown"),  # serve() stops the long-poll threads
    (wasyncore.dispatcher, "close"),  # the drain closes the listening socket with it
    (wasyncore, "poll"),  # _Server.run polls with it (or poll2), as wasyncore.loop does
    (wasyncore, "poll2"),
]

# Instance attributes, read on objects waitress builds.
SERVER_ATTRIBUTES = [
    "_map",
    "active_channels",
    "trigger",
    "adj",
    "accepting",
    "task_dispatcher",
    "socket",  # _Server._connection_waiting polls the listening socket
]
CHANNEL_ATTRIBUTES = [
    "request",  # _Channel.received, _Server.maintenance
    "requests",  # _Channel.writable
    "total_outbufs_len",  # _Channel.writable, _output_pending
    "will_close",  # _Channel.writable; _Server.maintenance sets it
    "close_when_flushed",  # _Channel.writable
    "adj",
    "server",  # _DrainingTask reads channel.server.draining
    "socket",  # _Channel._half_close shuts its sending side
    "last_activity",  # _Channel: when a lingering client last sent something
]
TASK_ATTRIBUTES = ["channel", "request", "status", "response_headers", "content_length"]
ADJUSTMENT_ATTRIBUTES = ["threads", "connection_limit", "outbuf_high_watermark"]
SERVER_PARAMETERS = ["application", "map", "_sock", "dispatcher", "adj", "bind_socket", "sockinfo"]


def missing(what: str) -> str:
    return (
        f"waitress {INSTALLED} has no {what}: identity/process/server.py was written "
        f"against waitress {server.WAITRESS_VERSION} and must be checked against this one"
    )


def test_the_pinned_waitress_is_the_one_the_server_was_written_for():
    parser = configparser.ConfigParser()
    parser.read(PROJECT_ROOT / "setup.cfg")
    requires = parser["options"]["install_requires"].split()
    assert f"waitress=={server.WAITRESS_VERSION}" in requires
    assert INSTALLED == server.WAITRESS_VERSION, missing("guarantee of the same internals")


@pytest.mark.parametrize(
    "owner, name", CLASS_MEMBERS, ids=[f"{o.__name__}.{n}" for o, n in CLASS_MEMBERS]
)
def test_each_member_the_server_overrides_or_calls_exists(owner, name):
    assert hasattr(owner, name), missing(f"{owner.__module__}.{owner.__name__}.{name}")


def test_the_constructors_take_the_arguments_the_server_passes(app):
    parameters = inspect.signature(TcpWSGIServer.__init__).parameters
    for name in SERVER_PARAMETERS:
        assert name in parameters, missing(f"TcpWSGIServer({name}=...)")
    settings = server.waitress_settings(app.config | {"TRUSTED_PROXY": "127.0.0.1"})
    try:
        adjustments = Adjustments(**settings)
    except ValueError as error:  # waitress names the setting it does not know
        pytest.fail(missing(f"adjustment: {error}"))
    for name in ADJUSTMENT_ATTRIBUTES:
        assert hasattr(adjustments, name), missing(f"Adjustments.{name}")


def test_the_objects_waitress_builds_have_the_attributes_the_server_reads(app):
    listener = socket.create_server(("127.0.0.1", 0))
    ours, theirs = socket.socketpair()
    built = server.create_server(app, listener)
    try:
        assert hasattr(built.trigger, "pull_trigger"), missing("server.trigger.pull_trigger")
        for name in SERVER_ATTRIBUTES:
            assert hasattr(built, name), missing(f"TcpWSGIServer instance attribute {name}")
        channel = built.channel_class(built, ours, ("127.0.0.1", 0), built.adj, map={})
        for name in CHANNEL_ATTRIBUTES:
            assert hasattr(channel, name), missing(f"HTTPChannel instance attribute {name}")
        request = HTTPRequestParser(built.adj)
        request.received(b"GET /events?wait=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert server._is_feed_read(request), missing("HTTPRequestParser.command or .path")
        request = HTTPRequestParser(built.adj)
        request.error = RequestEntityTooLarge("too large")
        task = channel.error_task_class(channel, request)
        for name in TASK_ATTRIBUTES:
            assert hasattr(task, name), missing(f"Task instance attribute {name}")
        channel.close()
    finally:
        built.close()
        theirs.close()
        listener.close()


def test_waitress_answers_the_errors_the_server_gives_json_bodies():
    """_JsonErrorTask maps waitress's error codes (request.error.code, .reason)."""
    errors = [BadRequest, RequestEntityTooLarge, RequestHeaderFieldsTooLarge, ServerNotImplemented]
    assert sorted(error.code for error in errors) == sorted(server._WAITRESS_ERRORS)
    assert all(isinstance(error.reason, str) for error in errors), missing("Error.reason")


def test_start_up_names_both_versions_on_another_waitress():
    server.check_waitress_version(server.WAITRESS_VERSION)  # the pinned one starts
    with pytest.raises(SystemExit) as stopped:
        server.check_waitress_version("9.9.9")
    message = str(stopped.value.code)
    assert "\n" not in message
    assert f"waitress {server.WAITRESS_VERSION}" in message and "found waitress 9.9.9" in message
