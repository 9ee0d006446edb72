"""Orion's operator command line: ``python -m tools <command> [args]``.

    create-operator EMAIL --name NAME   a user with the operator role (password from
                                        ORION_USER_PASSWORD, or asked for)
    catalog [...]                       import the catalog from the dataset
    replay [...]                        replay the dataset through the HTTP API
    audit [--json]                      check SPEC's guarantees over the database
    retry ORDER_ID [...]                re-drive sagas (as the operator's Retry)
    migrate                             create the database if needed and migrate it

Each command's ``--help`` gives its options.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "create-operator": ("tools.users", ["create-operator"]),
    "create-customer": ("tools.users", ["create-customer"]),
    "catalog": ("tools.catalog", []),
    "replay": ("tools.replay", []),
    "audit": ("tools.audit", []),
    "retry": ("tools.retry", []),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "migrate":
        from tools.dbsetup import main as migrate

        migrate()
        return 0
    if command not in COMMANDS:
        print(f"tools: unknown command {command!r}; one of: {', '.join([*COMMANDS, 'migrate'])}",
              file=sys.stderr)
        return 2
    module, prefix = COMMANDS[command]
    return importlib.import_module(module).main(prefix + rest) or 0


if __name__ == "__main__":
    sys.exit(main())
