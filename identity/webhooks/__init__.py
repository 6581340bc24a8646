"""Webhooks: `flask --app identity deliver` POSTs the change feed to a subscriber.

config.py reads the settings, deliverer.py runs the loop, signing.py signs each batch,
transport.py sends it. The deliverer is its own process, beside the web server; its
figures reach /metrics through the subscriber's row in the database.
"""

import signal
import threading

import click
from flask import current_app
from flask.cli import with_appcontext

from ..server import configure_logging
from .config import ConfigError, WebhookConfig
from .deliverer import Deliverer


@click.command("deliver")
@with_appcontext
def deliver_command() -> None:
    """Deliver the change feed to WEBHOOK_URL until SIGTERM (see docs/feed.md)."""
    try:
        config = WebhookConfig.from_environment()
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    if not current_app.config["DATABASE_URL"]:
        raise click.UsageError("DATABASE_URL must be set")
    configure_logging(current_app.config["LOG_LEVEL"])
    stop = threading.Event()
    # SIGTERM and Ctrl-C let a POST in flight finish and record its answer, then stop.
    # The event is set from another thread: the handler runs in the main thread, which
    # may be holding the event's own lock inside stop.wait() at that moment.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: threading.Thread(target=stop.set).start())
    database = {
        name: current_app.config[name]
        for name in ("DATABASE_URL", "STATEMENT_TIMEOUT_MS", "REQUEST_DEADLINE_S")
    }
    Deliverer(config, database, stop).run()
