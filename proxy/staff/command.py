"""``libproxy staff add``: add or update a staff account of the console.

    libproxy staff add --config config/proxy.toml --name maria --role it
    libproxy staff add --file var/staff-accounts.toml --name dir --role director --password-stdin

The password is asked for twice (or read from standard input for scripts), hashed with scrypt
and written to the accounts file, mode 0600. The running proxy picks the change up at the next
sign-in; no restart.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from proxy.staff.accounts import MIN_PASSWORD, ROLES, AccountsError, add_account, make_hash


def add_staff_parser(sub: Any) -> None:
    """Register ``staff add`` on the command line's sub-parsers (``build_parser``'s ``sub``)."""
    staff = sub.add_parser("staff", help="manage the staff console's accounts")
    ssub = staff.add_subparsers(dest="staff_command", required=True)
    add = ssub.add_parser("add", help="add or update a staff account (password asked for)")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the proxy's configuration: its [staff] accounts file is used")
    where.add_argument("--file", help="the staff accounts file itself")
    add.add_argument("--name", required=True, help="the staff member's sign-in name, e.g. maria")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="it: vendors, configuration, health, locks; director: statistics, privacy, records")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(func=cmd_staff_add)


def _accounts_file(args: argparse.Namespace) -> Path | None:
    if args.file:
        return Path(args.file)
    from proxy import config as config_mod
    from proxy.errors import ConfigError

    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return None
    return cfg.staff.accounts_path(cfg.proxy.state_dir)


def cmd_staff_add(args: argparse.Namespace) -> int:
    path = _accounts_file(args)
    if path is None:
        return 1
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        try:
            password = getpass.getpass("Password for this staff member: ")
            again = getpass.getpass("Password again: ")
        except EOFError:
            print("No password was typed (use --password-stdin to pipe one); nothing was written.",
                  file=sys.stderr)
            return 1
        if again != password:
            print("The two passwords differ; nothing was written.", file=sys.stderr)
            return 1
    # SECURITY: the console can clear locks and reload the configuration; no short passwords.
    if len(password) < MIN_PASSWORD or not password.isprintable():
        print(f"The password must be at least {MIN_PASSWORD} printable characters; nothing was written.",
              file=sys.stderr)
        return 1
    try:
        replaced = add_account(path, args.name, args.role, make_hash(password))
    except (AccountsError, OSError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    print(f"{'Updated' if replaced else 'Added'} staff account {args.name!r} ({args.role}) in {path}.")
    return 0
