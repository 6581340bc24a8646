"""The command-line commands, run as `flask --app identity NAME` (the Makefile's targets).

Each reads the app's settings and hands them to its capability, which knows nothing of
Flask."""

import signal
import sys
import threading
import uuid

import click
import psycopg2
from flask import current_app
from flask.cli import with_appcontext

from identity.customers import renormalise
from identity.customers.audit import find_orphans, find_violations
from identity.database import connections
from identity.database.migrations import MigrationError, migrate
from identity.database.transaction import Limits
from identity.feed.webhooks.config import ConfigError, WebhookConfig
from identity.feed.webhooks.deliverer import Deliverer
from identity.importing.command import (
    DEFAULT_BATCH_SIZE,
    default_rejects_path,
    run_import,
)
from identity.process.logs import configure_logging


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Apply the pending schema migrations (safe to repeat)."""
    config = current_app.config
    database_url = config["MIGRATION_DATABASE_URL"] or config["DATABASE_URL"]
    try:
        report = migrate(database_url, config["SCHEMA_DIR"])
    except MigrationError as error:
        raise click.ClickException(str(error)) from None
    for name in report.applied:
        click.echo(f"applied {name}")
    click.echo(
        f"schema up to date: {len(report.applied)} applied now, "
        f"{len(report.already_applied)} already applied"
    )


@click.command("audit")
@with_appcontext
def audit_command() -> None:
    """Check SPEC §6 invariants 1-3 over the whole contact table; exit 1 on a violation."""
    conn = psycopg2.connect(current_app.config["DATABASE_URL"])
    try:
        conn.set_session(readonly=True, isolation_level="REPEATABLE READ")
        violations = find_violations(conn)
        orphans = find_orphans(conn)
    finally:
        conn.close()
    for finding in [*orphans, *violations]:
        click.echo(str(finding))
    if violations:
        raise SystemExit(1)
    click.echo("audit: no violations of SPEC §6 invariants 1-3")


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


@click.command("import")
@click.argument("file")
@click.option(
    "--rejects",
    "rejects_path",
    help="where to list rejected orders (NDJSON); default FILE.rejects.ndjson, "
    "or stdin.rejects.ndjson for -",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 2000),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="orders per transaction",
)
@with_appcontext
def import_command(file: str, rejects_path: str | None, batch_size: int) -> None:
    """Import historical orders from FILE (CSV or NDJSON, .gz too; - reads standard input)."""
    configured_blocklist = current_app.extensions["identity_blocklist"].configured
    rejects_path = rejects_path or default_rejects_path(file)
    sys.exit(
        run_import(current_app.config, configured_blocklist, file, rejects_path, batch_size)
    )


@click.command("renormalise")
@click.option("--dry-run", is_flag=True, help="report what would change and merge; change nothing")
@with_appcontext
def renormalise_command(dry_run: bool) -> None:
    """Rewrite stored phone numbers to PHONE_REGION's form; merge the customers that then
    share a phone (docs/behaviour.md, SPEC §4). Resumable: run it again to finish."""
    region = current_app.config["PHONE_REGION"]
    if region is None:
        raise click.UsageError(
            "PHONE_REGION is unset: stored phone numbers already follow the rule without it"
        )
    config = current_app.config
    limits = Limits(config["STATEMENT_TIMEOUT_MS"], config["LOCK_TIMEOUT_MS"], idle_ms=0)
    conn = connections.connect(config, "identity-renormalise", limits)
    try:
        report = renormalise.renormalise(
            conn,
            region,
            f"renormalise-{uuid.uuid4().hex[:12]}",
            dry_run=dry_run,
            retry_budget=current_app.config["RETRY_BUDGET"],
        )
    except renormalise.TooManyConflicts:
        raise click.ClickException(
            "live traffic kept a phone's customers busy: run it again"
        ) from None
    finally:
        conn.close()
    _echo_report(report, dry_run)


def _echo_report(report: renormalise.Report, dry_run: bool) -> None:
    """Counts and row ids only: phone numbers never appear in output that may be logged."""
    would = "would be " if dry_run else ""
    for merge in report.merges:
        demoted = ", ".join(str(contact_id) for contact_id in merge.demoted_ids)
        click.echo(f"merge: {demoted} {would}merged into customer {merge.survivor_id}")
    click.echo(
        f"renormalise{' (dry run, nothing changed)' if dry_run else ''}: "
        f"{report.phones} phones, {report.rows} live rows {would}rewritten, "
        f"{len(report.merges)} merge{'' if len(report.merges) == 1 else 's'}"
        + ("" if dry_run else f", {report.deleted_rows} deleted rows rewritten")
    )


ALL = (init_db_command, audit_command, deliver_command, import_command, renormalise_command)
