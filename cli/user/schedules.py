"""`weft schedules list|get|create|update|delete|occurrences`: cron schedules of a workflow."""

from __future__ import annotations

import argparse

from cli.user.common import OK, connect, emit, guarded, key_values, resolve_workflow, table
from weft_client.types import Schedule


def _text(s: Schedule) -> str:
    state = "enabled" if s.enabled else f"disabled{f' ({s.paused_reason})' if s.paused_reason else ''}"
    return (f"schedule {s.id}  '{s.cron_expression}' {s.timezone}  {state}\n"
            f"next {s.next_run_at or '-'}, last {s.last_run_at or '-'}; missed: {s.missed_execution_policy}, "
            f"overlap: {s.overlap_policy}")


def _options(args: argparse.Namespace) -> dict:
    values = {"timezone": args.timezone, "missed_execution_policy": args.missed, "overlap_policy": args.overlap,
              "inputs": key_values(args.input) if args.input else None}
    return {k: v for k, v in values.items() if v is not None}


def _list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.list_schedules(resolve_workflow(client, args.workflow))
    emit(args, {"schedules": found, "count": len(found)}, lambda _: table(
        [(s.id, s.cron_expression, s.timezone, "yes" if s.enabled else "no", s.next_run_at or "") for s in found],
        ("SCHEDULE", "CRON", "ZONE", "ENABLED", "NEXT RUN")))
    return OK


def _get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        schedule = client.get_schedule(resolve_workflow(client, args.workflow), args.schedule)
    emit(args, schedule, _text)
    return OK


def _create(args: argparse.Namespace) -> int:
    with connect(args) as client:
        schedule = client.create_schedule(resolve_workflow(client, args.workflow), args.cron, **_options(args))
    emit(args, schedule, _text)
    return OK


def _update(args: argparse.Namespace) -> int:
    changes = _options(args)
    if args.cron:
        changes["cron_expression"] = args.cron
    if args.enable is not None:
        changes["enabled"] = args.enable
    with connect(args) as client:
        schedule = client.update_schedule(resolve_workflow(client, args.workflow), args.schedule, **changes)
    emit(args, schedule, _text)
    return OK


def _delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        message = client.delete_schedule(resolve_workflow(client, args.workflow), args.schedule)
    emit(args, {"id": args.schedule, "message": message}, f"deleted schedule {args.schedule}")
    return OK


def _occurrences(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.occurrences(resolve_workflow(client, args.workflow), args.schedule, status=args.status,
                                   at=args.at, limit=args.limit)
    emit(args, {"occurrences": found}, lambda _: table(
        [(o.scheduled_for, o.status, o.reason or "", o.run_id or "", o.run_status or "") for o in found],
        ("SCHEDULED FOR", "STATUS", "REASON", "RUN", "RUN STATUS")))
    return OK


def _policy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timezone", help="IANA zone (default UTC)")
    p.add_argument("--missed", choices=("run_immediately", "skip", "queue"), help="missed_execution_policy")
    p.add_argument("--overlap", choices=("skip", "buffer_one", "allow"), help="overlap_policy")
    p.add_argument("--input", "-i", action="append", metavar="K=V", help="an input for every run (repeatable)")


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    schedules = sub.add_parser("schedules", help="cron schedules of a workflow")
    ssub = schedules.add_subparsers(dest="action", required=True)
    p = ssub.add_parser("list", parents=[common], help="a workflow's schedules")
    p.add_argument("workflow")
    p.set_defaults(fn=guarded(_list))
    for name, fn, text in (("get", _get, "one schedule"), ("delete", _delete, "delete a schedule")):
        p = ssub.add_parser(name, parents=[common], help=text)
        p.add_argument("workflow")
        p.add_argument("schedule")
        p.set_defaults(fn=guarded(fn))
    p = ssub.add_parser("create", parents=[common], help="add a cron schedule")
    p.add_argument("workflow")
    p.add_argument("cron", help='5-field cron, e.g. "0 9 * * 1"')
    _policy_options(p)
    p.set_defaults(fn=guarded(_create))
    p = ssub.add_parser("update", parents=[common], help="change a schedule")
    p.add_argument("workflow")
    p.add_argument("schedule")
    p.add_argument("--cron")
    p.add_argument("--enable", dest="enable", action="store_true", default=None)
    p.add_argument("--disable", dest="enable", action="store_false")
    _policy_options(p)
    p.set_defaults(fn=guarded(_update))
    p = ssub.add_parser("occurrences", parents=[common], help="what happened to each occurrence")
    p.add_argument("workflow")
    p.add_argument("schedule")
    p.add_argument("--status", choices=("fired", "skipped", "missed", "buffered", "queued"))
    p.add_argument("--at", help="ISO time with a zone: why didn't it run then?")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(fn=guarded(_occurrences))
