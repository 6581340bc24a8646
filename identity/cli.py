"""The `identity` command of the installed package: serve | init-db | import | deliver |
audit | check-config | version.

Everything but `serve` is one of identity/commands.py's commands (the same ones as
`flask --app identity NAME`), run inside the app built from the environment; `serve` is
the supervisor of identity/process/supervisor.py. Settings come from the environment
(docs/operations.md); a bad one ends any command with one line naming it and status 2.
"""

import sys

import click

from identity import commands, config

# These need no app: serve builds one per worker, the others none.
_WITHOUT_APP = ("serve", "version", "check-config")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(context: click.Context) -> None:
    """Identity reconciliation service; settings come from the environment."""
    if context.invoked_subcommand not in _WITHOUT_APP:
        from identity import create_app

        context.with_resource(create_app().app_context())


@cli.command()
def serve() -> None:
    """Serve HTTP with WORKERS processes on HOST:PORT until SIGTERM or Ctrl-C."""
    from identity.process.supervisor import main as supervise

    sys.exit(supervise())


@cli.command("check-config")
def check_config() -> None:
    """Check every setting of the environment; exit 2 naming the first bad one."""
    config.from_environment()
    click.echo("configuration: every setting is valid")


@cli.command()
def version() -> None:
    """Print the installed version."""
    click.echo(f"{config.DISTRIBUTION} {config.version()}")


for command in commands.ALL:
    cli.add_command(command, command.name)


def main() -> None:
    """The console script: a bad setting is one line and status 2, Ctrl-C a quiet 0."""
    try:
        cli.main(prog_name="identity", standalone_mode=False)
    except config.ConfigError as error:
        print(f"identity: {error}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.Abort:  # Ctrl-C (click turns KeyboardInterrupt into Abort)
        sys.exit(0)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
