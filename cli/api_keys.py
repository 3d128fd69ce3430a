"""`weft api-key ...`: create, list, update, deactivate, rotate and delete public API keys.

A key is printed once, at create and rotate; only its hash is stored. Registered by cli/main.py.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from libs.security import apikeys

_UNSET = object()  # not a string: argparse would run a string default through the option's type


def _when(raw: str) -> datetime | None:
    """--expires: an ISO 8601 date or time (UTC unless it names a zone), or `never`."""
    if raw.strip().lower() == "never":
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {raw!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _limit(raw: str) -> int | None:
    """--monthly-limit: a count of executions per calendar month, or `none` for no limit."""
    if raw.strip().lower() == "none":
        return None
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number or 'none': {raw!r}") from None


def _key_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a key id (uuid): {raw!r}") from None


async def _in_tenant(tenant: str, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    from cli.context import settings as cli_settings
    from libs.events.db import create_pool, tenant_transaction

    settings = cli_settings()
    pool = await create_pool(settings, min_size=1, max_size=1)
    try:
        async with tenant_transaction(pool, tenant, settings.db_app_role) as conn:
            return await work(conn)
    finally:
        await pool.close()


def _record(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": str(row["id"]), "tenant": row["tenant_id"], "name": row["name"], "key_prefix": row["key_hint"],
            "workflow_ids": list(row["workflow_ids"]), "active": row["active"], "expires_at": row["expires_at"],
            "monthly_limit": row["monthly_limit"], "used_this_month": row["used_this_month"],
            "rate_limit": {"burst": row["rate_burst"], "per_minute": row["rate_per_minute"]},
            "created_at": row["created_at"], "rotated_at": row["rotated_at"]}


def _print(record: dict[str, Any], key: str | None, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    if as_json:
        print(msgspec.json.encode({**({"key": key} if key else {}), **record, **(extra or {})}).decode())
        return
    if key:
        print("The API key (shown only now; store it, Weft keeps only its hash):\n")
        print(f"    {key}\n")
    limit = record["monthly_limit"]
    print(f"id:            {record['id']}\n"
          f"tenant:        {record['tenant']}\n"
          f"name:          {record['name']} ({record['key_prefix']})\n"
          f"workflows:     {', '.join(record['workflow_ids'])}\n"
          f"active:        {'yes' if record['active'] else 'no'}\n"
          f"expires:       {record['expires_at'].isoformat() if record['expires_at'] else 'never'}\n"
          f"monthly limit: {'none' if limit is None else limit} ({record['used_this_month']} used this month)\n"
          f"rate limit:    burst {record['rate_limit']['burst']}, {record['rate_limit']['per_minute']} per minute")
    for name, value in (extra or {}).items():
        print(f"{name + ':':<15}{value}")


def _create(args: argparse.Namespace) -> int:
    webhook = None
    if args.webhook_url:
        from libs.adapters import webhooks

        events = [e for part in (args.webhook_events or list(webhooks.EVENTS)) for e in part.split(",") if e]
        webhook = (args.webhook_url, events, args.webhook_secret or webhooks.generate_secret())
    elif args.webhook_events or args.webhook_secret:
        raise ValueError("--webhook-events and --webhook-secret need --webhook-url")

    async def work(conn: asyncpg.Connection):
        key, row = await apikeys.create_key(
            conn, tenant_id=args.tenant, name=args.name, workflow_ids=apikeys.parse_workflow_ids(args.workflow),
            created_by=f"cli:{getpass.getuser()}", expires_at=args.expires, monthly_limit=args.monthly_limit,
            burst=args.burst, per_minute=args.per_minute)
        extra = {}
        if webhook is not None:
            from libs.adapters.webhooks import create_endpoint

            # Same transaction as the key: a bad webhook leaves no key behind.
            endpoint = await create_endpoint(conn, tenant_id=args.tenant, url=webhook[0], events=webhook[1],
                                             secret=webhook[2], api_key_id=row["id"])
            extra = {"webhook_id": str(endpoint), "webhook_url": webhook[0], "webhook_events": ",".join(webhook[1])}
            if not args.webhook_secret:
                extra["webhook_secret"] = webhook[2]  # generated: shown once, like the key
        return key, row, extra

    key, row, extra = asyncio.run(_in_tenant(args.tenant, work))
    _print(_record(row), key, args.json, extra)
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = asyncio.run(_in_tenant(args.tenant, lambda conn: apikeys.list_keys(conn, args.tenant)))
    if args.json:
        print(msgspec.json.encode([_record(r) for r in rows]).decode())
        return 0
    if not rows:
        print(f"no API keys in tenant {args.tenant}")
    for row in rows:
        state = "active" if row["active"] else "inactive"
        limit = "none" if row["monthly_limit"] is None else row["monthly_limit"]
        print(f"{row['id']}  {row['key_hint']}  {state:<8}  {row['used_this_month']}/{limit} this month  {row['name']}")
    return 0


def _update(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    for name, value in (("name", args.name), ("burst", args.burst), ("per_minute", args.per_minute)):
        if value is not None:
            changes[name] = value
    if args.workflow:
        changes["workflow_ids"] = apikeys.parse_workflow_ids(args.workflow)
    if args.expires is not _UNSET:
        changes["expires_at"] = args.expires
    if args.monthly_limit is not _UNSET:
        changes["monthly_limit"] = args.monthly_limit
    if args.active is not None:
        changes["active"] = args.active
    return _change(args, lambda conn: apikeys.update_key(conn, args.tenant, args.key_id, **changes))


def _deactivate(args: argparse.Namespace) -> int:
    return _change(args, lambda conn: apikeys.update_key(conn, args.tenant, args.key_id, active=False))


def _change(args: argparse.Namespace, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> int:
    row = asyncio.run(_in_tenant(args.tenant, work))
    if row is None:
        raise ValueError(f"no API key {args.key_id} in tenant {args.tenant}")
    _print(_record(row), None, args.json)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    rotated = asyncio.run(_in_tenant(args.tenant, lambda conn: apikeys.rotate_key(conn, args.tenant, args.key_id)))
    if rotated is None:
        raise ValueError(f"no API key {args.key_id} in tenant {args.tenant}")
    key, row = rotated
    _print(_record(row), key, args.json)
    return 0


def _delete(args: argparse.Namespace) -> int:
    if not asyncio.run(_in_tenant(args.tenant, lambda conn: apikeys.delete_key(conn, args.tenant, args.key_id))):
        raise ValueError(f"no API key {args.key_id} in tenant {args.tenant}")
    print(f"deleted API key {args.key_id}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `weft api-key` and its subcommands."""
    parser = sub.add_parser("api-key", help="public API keys: create, list, update, deactivate, rotate, delete")
    ksub = parser.add_subparsers(dest="action", required=True)

    def command(name: str, fn, help_text: str, *, key_id: bool = True) -> argparse.ArgumentParser:
        p = ksub.add_parser(name, help=help_text)
        p.add_argument("--tenant", required=True)
        if key_id:
            p.add_argument("key_id", type=_key_id)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(fn=fn)
        return p

    create = command("create", _create, "create a key and print it (once)", key_id=False)
    create.add_argument("--name", required=True)
    create.add_argument("--workflow", required=True, action="extend", nargs="+", metavar="ID",
                        help="workflow id(s) the key may execute (repeatable)")
    create.add_argument("--expires", type=_when, default=None, help="ISO 8601 date or time (UTC by default)")
    create.add_argument("--monthly-limit", type=_limit, default=apikeys.DEFAULT_MONTHLY_LIMIT,
                        help=f"executions per calendar month, or 'none' (default {apikeys.DEFAULT_MONTHLY_LIMIT})")
    create.add_argument("--burst", type=int, default=apikeys.DEFAULT_BURST, help="rate-limit burst (default 10)")
    create.add_argument("--per-minute", type=int, default=apikeys.DEFAULT_PER_MINUTE,
                        help="rate-limit refill, requests per minute (default 60: one per second)")
    create.add_argument("--webhook-url", help="send this key's execution events here (spec D webhooks)")
    create.add_argument("--webhook-events", action="extend", nargs="+", metavar="EVENT",
                        help="events to send (default all: execution.started, .completed, .failed, .pending_approval)")
    create.add_argument("--webhook-secret", help="HMAC secret for X-Webhook-Signature (generated if absent)")

    command("list", _list, "list a tenant's keys (never the keys themselves)", key_id=False)
    update = command("update", _update, "change a key's settings; they apply to its next request")
    update.add_argument("--name")
    update.add_argument("--workflow", action="extend", nargs="+", metavar="ID", help="replace the workflow list")
    update.add_argument("--expires", type=_when, default=_UNSET, help="ISO 8601 date or time, or 'never'")
    update.add_argument("--monthly-limit", type=_limit, default=_UNSET, help="a number, or 'none'")
    update.add_argument("--burst", type=int)
    update.add_argument("--per-minute", type=int)
    update.add_argument("--active", type=lambda v: v.lower() in ("1", "true", "yes", "on"), default=None,
                        help="true or false")
    command("deactivate", _deactivate, "deactivate a key (its requests get 403)")
    command("rotate", _rotate, "replace a key's secret (same id and settings) and print the new key (once)")
    command("delete", _delete, "delete a key")
