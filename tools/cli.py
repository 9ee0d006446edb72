"""``orion``: Orion's command line (the console script of ``pyproject.toml``).

    orion up                            start the whole platform (what ./run.sh runs)
    orion create-operator EMAIL --name NAME
    orion create-customer EMAIL --name NAME
    orion catalog [--data PATH]         import the catalog from the dataset
    orion replay [...]                  replay the dataset through the HTTP API
    orion audit [--json]                check SPEC's guarantees over the database
    orion retry ORDER_ID...             re-drive sagas (as the operator's Retry)
    orion migrate                       create the database if needed and migrate it
    orion dlq list|replay|purge         the dead-letter queue (tools.dlq)

``python -m tools`` is the same command line. Each command's ``--help`` gives its
options; settings come from the environment (README, "Configuration").
"""

from __future__ import annotations

import importlib
import sys

import click

from tools.clicommon import run

# command name -> (module, attribute): imported when the command runs, so that
# ``orion --help`` does not load Celery, SQLAlchemy and Flask.
COMMANDS = {
    "up": ("tools.launch", "command"),
    "create-operator": ("tools.users", "create_operator"),
    "create-customer": ("tools.users", "create_customer"),
    "catalog": ("tools.catalog", "command"),
    "replay": ("tools.replay", "command"),
    "audit": ("tools.audit", "command"),
    "retry": ("tools.retry", "command"),
    "migrate": ("tools.dbsetup", "migrate"),
    "dlq": ("tools.dlq", "group"),
}
SUMMARIES = {
    "up": "Start the whole platform in the foreground (embedded default: no servers).",
    "create-operator": "Create a user with the operator role.",
    "create-customer": "Create a user with the customer role.",
    "catalog": "Import the catalog from the Online Retail dataset.",
    "replay": "Replay the dataset's invoices through a running Orion.",
    "audit": "Check SPEC's guarantees over the database (exit 1 on a violation).",
    "retry": "Re-drive sagas, as the operator's Retry does.",
    "migrate": "Create the database if it is missing and migrate it.",
    "dlq": "Inspect, replay and purge the dead-letter queue.",
}


class LazyGroup(click.Group):
    """A group whose commands are imported only when one is run or asked for help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name]
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUMMARIES[name]) for name in COMMANDS])


@click.group(cls=LazyGroup, name="orion", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="orion", message="%(prog)s %(version)s")
def cli() -> None:
    """Orion: a distributed order-processing platform (Flask, Celery, RabbitMQ, PostgreSQL)."""


def main(argv: list[str] | None = None) -> int:
    """The console script: ``orion <command> [options]``; returns the exit status."""
    return run(cli, argv, "orion")


if __name__ == "__main__":
    sys.exit(main())
