"""``chat`` command line: serve, token, migrate."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping

from chat.config import ConfigError, Settings, from_env
from chat.errors import ExitCode, StartupError


def _settings(*, create_dev_secret: bool = True, json_errors: bool = False) -> Settings:
    """The settings, or exit 2 after saying why: one line per problem, or — for a node that logs
    JSON (``json_errors``) — one JSON line listing them all."""
    try:
        settings = from_env(create_dev_secret=create_dev_secret)
    except ConfigError as error:
        if json_errors and _wants_json_logs(os.environ):
            from chat.logsetup import failure_line

            print(failure_line("invalid configuration", ExitCode.CONFIG, problems=error.problems), file=sys.stderr)
        else:
            print("chat: invalid configuration:", file=sys.stderr)
            for problem in error.problems:
                print(f"  {problem}", file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG) from None
    if not json_errors:  # a node logs its warnings through its own log format
        for warning in settings.warnings:
            print(f"chat: warning: {warning}", file=sys.stderr)
    return settings


def _wants_json_logs(env: Mapping[str, str]) -> bool:
    """What CHAT_LOG_FORMAT would choose, read raw (for a configuration that did not parse)."""
    chosen = env.get("CHAT_LOG_FORMAT", "").strip().lower()
    return chosen == "json" or (not chosen and env.get("CHAT_ENV", "").strip().lower() == "production")


def cmd_serve(args: argparse.Namespace) -> int:
    from chat import logsetup
    from chat.app import create_app
    from chat.server import run

    settings = _settings(json_errors=True)
    logsetup.configure(kind=settings.log_format, level=args.log_level, node_id=settings.node_id)
    for warning in settings.warnings:
        logging.getLogger("chat.config").warning("%s", warning)
    app = create_app(settings)
    try:
        return run(app, settings, log_level=args.log_level)
    except StartupError as error:
        # One line: `chat: <why>` in text, one JSON object (with its exit code) in JSON.
        text = logsetup.failure_line(str(error), error.exit_code, node_id=settings.node_id) if settings.log_format == "json" else f"chat: {error}"
        print(text, file=sys.stderr)
        return error.exit_code


def cmd_token(args: argparse.Namespace) -> int:
    from chat.auth import issue_token
    from chat.config import dev_secret_path

    # A token is only useful signed with the server's secret: never make up a new one here.
    settings = _settings(create_dev_secret=False)
    if not settings.jwt_secret and not settings.jwt_public_key:
        print(
            f"chat token: no secret to sign with: CHAT_JWT_SECRET is not set and {dev_secret_path(settings.data_dir).resolve()} "
            "does not exist. Set CHAT_DATA_DIR to the data dir of the node you want a token for (the node creates "
            "jwt-secret there when it first starts), or CHAT_JWT_SECRET to its secret.",
            file=sys.stderr,
        )
        return ExitCode.CONFIG
    try:
        print(issue_token(settings, args.user, roles=tuple(args.role or ()), ttl_s=args.ttl))
    except ValueError as error:
        print(f"chat token: {error}", file=sys.stderr)
        return ExitCode.CONFIG
    return ExitCode.OK


def cmd_migrate(args: argparse.Namespace) -> int:
    import asyncio

    settings = _settings()
    if not settings.cassandra_hosts:
        print("chat migrate: the embedded SQLite store migrates itself at start; set CHAT_CASSANDRA_HOSTS for Cassandra")
        return 0
    from chat.store.cassandra_schema import migrate

    return asyncio.run(migrate(settings))


def cmd_config(args: argparse.Namespace) -> int:
    from chat import config_cli

    if args.action == "set" and (args.key is None or args.value is None):
        print("chat config set: give KEY and VALUE", file=sys.stderr)
        return 2
    return config_cli.run(_settings(), args.action, args.key, args.value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chat", description="Real-time chat and presence server.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a chat node (configured by CHAT_* environment variables)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)
    token = sub.add_parser("token", help="print a development JWT for USER")
    token.add_argument("user")
    token.add_argument("--role", action="append", choices=["bot", "admin"], help="repeatable")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds (default 86400)")
    token.set_defaults(func=cmd_token)
    migrate = sub.add_parser("migrate", help="create or upgrade the Cassandra schema")
    migrate.set_defaults(func=cmd_migrate)
    config = sub.add_parser("config", help="read or change the dynamic settings (every node sees a change within a second)")
    config.add_argument("action", choices=["get", "set"])
    config.add_argument("key", nargs="?")
    config.add_argument("value", nargs="?")
    config.set_defaults(func=cmd_config)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
