"""Create a user from the command line (operators cannot register over the API).

``orion create-operator EMAIL --name NAME`` (and ``create-customer``) reads the password
from ``ORION_USER_PASSWORD`` or, when that is unset, asks for it. Prints the
new user as JSON; exits 1 with a message naming the problem (email taken,
password too short).
"""

from __future__ import annotations

import getpass
import json
import os
import sys

import click

from models.user import CUSTOMER, OPERATOR
from tools.clicommon import run

MIN_PASSWORD = 8  # as POST /auth/register asks


def create(email: str, name: str, role: str) -> int:
    """Create the user; prints it as JSON and returns 0, or names the problem and returns 1."""
    from services.errors import Conflict
    from web.auth import create_user

    password = os.environ.get("ORION_USER_PASSWORD") or getpass.getpass("password: ")
    if len(password) < MIN_PASSWORD:
        print(f"users: the password must have at least {MIN_PASSWORD} characters", file=sys.stderr)
        return 1
    try:
        user = create_user(email, password, name, role=role)
    except Conflict as exc:
        print(f"users: {email}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(user.to_dict()))
    return 0


def _user_command(name: str, role: str) -> click.Command:
    @click.command(
        name,
        help=f"Create a user with the {role} role (password from "
        "ORION_USER_PASSWORD, or asked for); prints it as JSON.",
    )
    @click.argument("email")
    @click.option("--name", "display_name", required=True, help="the name shown to the user")
    def command(email: str, display_name: str) -> int:
        return create(email, display_name, role)

    return command


create_operator = _user_command("create-operator", OPERATOR)
create_customer = _user_command("create-customer", CUSTOMER)
group = click.Group(
    "users", commands=[create_operator, create_customer], help="Create users from the command line."
)


def main(argv: list[str] | None = None) -> int:
    return run(group, argv, "python -m tools.users")


if __name__ == "__main__":
    sys.exit(main())
