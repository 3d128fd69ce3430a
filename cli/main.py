"""The `weft` command: token, migrate, projections rebuild, up."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import NoReturn

from cli.context import explain, settings


def _token(args: argparse.Namespace) -> int:
    from libs.security.auth import issue_token

    print(issue_token(settings(), args.tenant, args.user, ttl_s=args.ttl, email=args.email))
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from libs.events.migrate import migrate

    applied = asyncio.run(migrate(settings().database_url))
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def _rebuild(_: argparse.Namespace) -> int:
    import asyncpg

    from libs.readmodels import rebuild

    async def run() -> int:
        conn = await asyncpg.connect(settings().database_url)
        try:
            return await rebuild(conn)
        finally:
            await conn.close()

    print(f"rebuilt read models from {asyncio.run(run())} events")
    return 0


def _up(_: argparse.Namespace) -> int:
    from deploy.local.stack import up

    return up()


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line too, naming the command whose --help explains it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"weft: {message} (see `{self.prog} --help`)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="weft", description="Weft workflow automation platform")
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="print a signed dev JWT (local issuer)")
    token.add_argument("--tenant", required=True)
    token.add_argument("--user", required=True)
    token.add_argument("--ttl", type=int, default=12 * 3600, help="seconds (default 12 h)")
    token.add_argument("--email", help="an `email` claim: where plan-approval emails for this user go")
    token.set_defaults(fn=_token)
    sub.add_parser("migrate", help="apply pending SQL migrations").set_defaults(fn=_migrate)
    projections = sub.add_parser("projections", help="read-model maintenance")
    psub = projections.add_subparsers(dest="action", required=True)
    psub.add_parser("rebuild", help="rebuild every read model from the event log").set_defaults(fn=_rebuild)
    sub.add_parser("up", help="run the whole platform on the embedded default").set_defaults(fn=_up)
    from cli.api_keys import add_parser as add_api_key_parser

    add_api_key_parser(sub)  # weft api-key create|list|update|deactivate|rotate|delete
    from cli.user import add_parsers as add_user_parsers

    add_user_parsers(sub, parser)  # weft workflows|run|runs|approvals|schedules|parse|completion (over weft_client)
    from cli.agents import add_parser as add_agents_parser

    add_agents_parser(sub)  # weft agents create|list|show|update|delete (over the v2 API)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - every error becomes one line saying what to do
        if os.environ.get("WEFT_DEBUG"):
            raise
        print(f"weft: {explain(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1


if __name__ == "__main__":
    sys.exit(main())
