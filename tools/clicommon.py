"""Running a click command as a module's ``main(argv) -> exit status``, so each
operator tool works the same as ``orion <command>``, ``python -m tools.<module>``
and, in tests, as a function call."""

from __future__ import annotations

import click


def run(command: click.Command, argv: list[str] | None, prog_name: str) -> int:
    """Run ``command`` on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Usage errors print click's message and give 2, as the command line does;
    ``--help`` prints the help and gives 0.
    """
    try:
        result = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return result if isinstance(result, int) else 0
