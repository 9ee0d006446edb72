"""Create a user from the command line (operators cannot register over the API).

``python -m tools.users create-operator EMAIL --name NAME`` reads the password
from ``ORION_USER_PASSWORD`` or, when that is unset, asks for it. Prints the
new user as JSON; exits 1 with a message naming the problem (email taken,
password too short).
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from models.user import CUSTOMER, OPERATOR
from services.errors import Conflict

MIN_PASSWORD = 8  # as POST /auth/register asks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command, role in (("create-operator", OPERATOR), ("create-customer", CUSTOMER)):
        cmd = sub.add_parser(command, help=f"create a user with the {role} role")
        cmd.add_argument("email")
        cmd.add_argument("--name", required=True)
        cmd.set_defaults(role=role)
    args = parser.parse_args(argv)
    password = os.environ.get("ORION_USER_PASSWORD") or getpass.getpass("password: ")
    if len(password) < MIN_PASSWORD:
        print(f"users: the password must have at least {MIN_PASSWORD} characters", file=sys.stderr)
        return 1
    from web.auth import create_user

    try:
        user = create_user(args.email, password, args.name, role=args.role)
    except Conflict as exc:
        print(f"users: {args.email}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(user.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
