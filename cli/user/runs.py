"""`weft run WORKFLOW [--input k=v] [--wait] [--follow]` and `weft runs list|get|cancel`."""

from __future__ import annotations

import argparse
import sys

import msgspec

from cli.user.common import OK, RUN_FAILED, connect, emit, guarded, key_values, resolve_workflow, table
from cli.user.live import LiveView
from weft_client.types import Run


def _run_text(run: Run) -> str:
    lines = [f"run {run.id}  {run.status}", f"started {run.started_at}" + (
        f", finished {run.finished_at}" if run.finished_at else "")]
    if run.error:
        lines.append(f"error: {run.error}")
    if run.outputs is not None:
        lines.append("outputs: " + msgspec.json.encode(run.outputs).decode())
    return "\n".join(lines)


def _exit(run: Run) -> int:
    return OK if run.status != "failed" and run.status != "terminated" else RUN_FAILED


def _start(args: argparse.Namespace) -> int:
    inputs = key_values(args.input)
    with connect(args) as client:
        workflow_id = resolve_workflow(client, args.workflow)
        run = client.execute(workflow_id, inputs, idempotency_key=args.idempotency_key)
        if args.follow:
            run = _follow(args, client, workflow_id, run)
        elif args.wait:
            run = client.wait_run(workflow_id, run.id, timeout_s=args.timeout)
    if args.follow:  # JSON lines: each event, then the run as it ended
        print(msgspec.json.encode(run).decode() if args.json else _run_text(run))
        return _exit(run)
    emit(args, run, _run_text)
    return _exit(run) if (args.wait or args.follow) else OK


def _follow(args: argparse.Namespace, client, workflow_id: str, run: Run) -> Run:
    """Show the run's steps live (JSON lines with --json) until it finishes; then the run as it ended."""
    view = None if args.json else LiveView.of(client.get_workflow(workflow_id).definition)
    if view is not None:
        print(f"run {run.id} of {workflow_id}")
        view.show(None)
    for event in client.events(workflow_id, run.id):
        if view is None:
            sys.stdout.write(msgspec.json.encode(event).decode() + "\n")
            sys.stdout.flush()
        else:
            view.apply(event)
    return client.get_run(workflow_id, run.id)


def _list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        workflow_id = resolve_workflow(client, args.workflow)
        page = client.list_runs(workflow_id, status=args.status, limit=args.limit, offset=args.offset)
    emit(args, {"runs": page.items, "count": page.count}, lambda _: table(
        [(r.id, r.status, r.started_at, r.finished_at or "", (r.error or "")[:60]) for r in page.items],
        ("RUN", "STATUS", "STARTED", "FINISHED", "ERROR")))
    return OK


def _get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        run = client.get_run(resolve_workflow(client, args.workflow), args.run, at_version=args.at_version)
    emit(args, run, _run_text)
    return OK


def _cancel(args: argparse.Namespace) -> int:
    with connect(args) as client:
        workflow_id = resolve_workflow(client, args.workflow)
        message = client.cancel_run(workflow_id, args.run)
    emit(args, {"id": args.run, "message": message}, f"terminated {args.run}")
    return OK


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="start a run (and --wait for it or --follow it live)")
    p.add_argument("workflow", help="id or exact name")
    p.add_argument("--input", "-i", action="append", metavar="K=V", help="an input (repeatable; JSON values parse)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--wait", action="store_true", help="wait until it finishes; exit 1 if it failed")
    how.add_argument("--follow", "-f", action="store_true", help="show its steps live; exit 1 if it failed")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")
    p.add_argument("--idempotency-key", help="repeat-safe: the same key starts one run")
    p.set_defaults(fn=guarded(_start))
    runs = sub.add_parser("runs", help="list, show and cancel runs")
    rsub = runs.add_subparsers(dest="action", required=True)
    p = rsub.add_parser("list", parents=[common], help="a workflow's runs, newest first")
    p.add_argument("workflow", help="id or exact name")
    p.add_argument("--status", choices=("running", "completed", "failed", "terminated"))
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(fn=guarded(_list))
    p = rsub.add_parser("get", parents=[common], help="one run")
    p.add_argument("workflow", help="id or exact name")
    p.add_argument("run")
    p.add_argument("--at-version", type=int, help="the run as of its first N events")
    p.set_defaults(fn=guarded(_get))
    p = rsub.add_parser("cancel", parents=[common], help="terminate a running run")
    p.add_argument("workflow", help="id or exact name")
    p.add_argument("run")
    p.set_defaults(fn=guarded(_cancel))
