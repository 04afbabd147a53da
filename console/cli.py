"""`pacecds console-user`: add a console user, set a password or role, remove, list (console/users.py).

The password is read from a prompt (twice) on a terminal, else from the first line of standard input, and
never from the command line (argv is visible to every user of the machine and kept in shell history).
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys

from .users import ROLES, UsersError, read_users, remove_user, set_user


def register_console_user_commands(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("console-user", help="manage the console's signed-in users (PACECDS_CONSOLE_USERS)",
                              description="Manage the users file of the web console: argon2id password hashes "
                                          "and roles (clinician: workbench and rules; auditor: also the decision "
                                          "log). Passwords are prompted for, or read from standard input.")
    p.add_argument("--file", metavar="USERS.yaml",
                   help="the users file (default: PACECDS_CONSOLE_USERS)")
    sub = p.add_subparsers(dest="user_command", title="commands")
    sub.required = True
    a = sub.add_parser("add", help="add a user (password from a prompt or standard input)")
    a.add_argument("username")
    a.add_argument("--role", choices=ROLES, required=True)
    a.set_defaults(func=cmd_add)
    s = sub.add_parser("passwd", help="set a user's password (and --role to change the role)")
    s.add_argument("username")
    s.add_argument("--role", choices=ROLES)
    s.set_defaults(func=cmd_passwd)
    r = sub.add_parser("remove", help="remove a user (their sessions end at the next request)")
    r.add_argument("username")
    r.set_defaults(func=cmd_remove)
    ls = sub.add_parser("list", help="user names and roles")
    ls.set_defaults(func=cmd_list)
    return p


def _file(args) -> str:
    path = args.file or os.environ.get("PACECDS_CONSOLE_USERS", "").strip()
    if not path:
        raise UsersError("no users file: pass --file or set PACECDS_CONSOLE_USERS")
    return path


def _password(username: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {username}: ")
        if getpass.getpass("Again: ") != first:
            raise UsersError("the two passwords differ")
        return first
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def _run(func) -> int:
    try:
        func()
    except UsersError as e:
        print(f"pacecds console-user: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_add(args) -> int:
    def go():
        path = _file(args)
        user = set_user(path, args.username, _password(args.username), args.role, create=True)
        print(f"added {user.username} ({user.role}) to {path}")
    return _run(go)


def cmd_passwd(args) -> int:
    def go():
        path = _file(args)
        user = set_user(path, args.username, _password(args.username), args.role, create=False)
        print(f"set the password of {user.username} ({user.role}) in {path}; their earlier sessions have ended")
    return _run(go)


def cmd_remove(args) -> int:
    def go():
        path = _file(args)
        remove_user(path, args.username)
        print(f"removed {args.username} from {path}")
    return _run(go)


def cmd_list(args) -> int:
    def go():
        for user in read_users(_file(args)).values():
            print(f"{user.username}\t{user.role}")
    return _run(go)
