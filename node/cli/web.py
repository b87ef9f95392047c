"""``ainode users add|list|remove`` and ``ainode dashboard`` (registered by :func:`node.cli.build_parser`)."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from typing import Any

from ainode_core.errors import ConfigError
from node.cli.common import configure_logging, load_cli_settings, open_database

logger = logging.getLogger("ainode")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise ConfigError("no terminal to ask for the password: use --password-stdin")
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("the two passwords differ")
    return password


def cmd_users_add(args: argparse.Namespace) -> int:
    """Create a dashboard user."""
    from node.users import add_user, parse_roles

    roles = parse_roles(args.role)
    database = open_database(args)
    add_user(database, args.name, _read_password(args), roles)
    print(f"user {args.name} added with role(s) {', '.join(roles)}")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    """List dashboard users."""
    database = open_database(args)
    users = database.list_users()
    if not users:
        print("no users; add one with `ainode users add NAME --role admin`")
        return 0
    print(f"{'NAME':<24} {'ROLES':<20} CREATED")
    for user in users:
        print(f"{user.name:<24} {user.roles:<20} {user.created_at.isoformat(timespec='seconds')}Z")
    return 0


def cmd_users_remove(args: argparse.Namespace) -> int:
    """Remove a dashboard user (their sessions end at their next request)."""
    database = open_database(args)
    if not database.remove_user(args.name):
        print(f"no user {args.name}; see `ainode users list`", file=sys.stderr)
        return 1
    print(f"user {args.name} removed")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard with uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    from node.web.app import create_app

    settings = load_cli_settings(args)
    if args.host or args.port:
        web = settings.web.model_copy(
            update={k: v for k, v in (("host", args.host), ("port", args.port)) if v}
        )
        settings = settings.model_copy(update={"web": web})
    configure_logging(settings.log_level, settings.log_phi)
    database = open_database(args)
    if not database.list_users() and settings.web.trusted_user_header is None:
        logger.warning("no dashboard users yet: add one with `ainode users add NAME --role admin`")
    app = create_app(settings, database)
    from storage.database import redact_url

    logger.info("dashboard on http://%s:%d/ (database %s)", settings.web.host, settings.web.port,
                redact_url(settings.resolved_database_url))
    uvicorn.run(app, host=settings.web.host, port=settings.web.port, log_level="warning",
                proxy_headers=False, server_header=False)
    return 0


def add_parsers(sub: Any, add_node_options: Any) -> None:
    """Add ``users`` and ``dashboard`` to the ``ainode`` sub-command parser."""
    users = sub.add_parser("users", help="manage dashboard users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="add a user (asks for the password)")
    add_node_options(add)
    add.add_argument("name")
    add.add_argument("--role", action="append", required=True,
                     help="admin, viewer, phi or service (STOW-RS only); repeat or "
                     "comma-separate to combine")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    add.set_defaults(func=cmd_users_add)
    listing = users_sub.add_parser("list", help="list users")
    add_node_options(listing)
    listing.set_defaults(func=cmd_users_list)
    remove = users_sub.add_parser("remove", help="remove a user")
    add_node_options(remove)
    remove.add_argument("name")
    remove.set_defaults(func=cmd_users_remove)

    dashboard = sub.add_parser("dashboard", help="serve the admin web dashboard and REST API")
    add_node_options(dashboard)
    dashboard.add_argument("--host", help="bind address (default web.host, 127.0.0.1)")
    dashboard.add_argument("--port", type=int, help="HTTP port (default web.port, 8080)")
    dashboard.set_defaults(func=cmd_dashboard)


__all__ = ["add_parsers", "cmd_dashboard", "cmd_users_add", "cmd_users_list", "cmd_users_remove"]
