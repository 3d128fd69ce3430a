"""`weft approvals list|approve|reject`: steps waiting for a decision, decided as the signed-in user."""

from __future__ import annotations

import argparse

from cli.user.common import OK, connect, emit, guarded, resolve_workflow, table
from weft_client.errors import Conflict, NotFound


def _list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        workflow_id = resolve_workflow(client, args.workflow) if args.workflow else None
        page = client.list_approvals(workflow_id, limit=args.limit, offset=args.offset)
    emit(args, {"approvals": page.items, "count": page.count}, lambda _: table(
        [(a.run_id, a.step_id, a.workflow_name, a.title, a.total_rows, a.paused_at) for a in page.items],
        ("RUN", "STEP", "WORKFLOW", "TITLE", "ROWS", "WAITING SINCE")))
    return OK


def _decide(args: argparse.Namespace, decision: str) -> int:
    with connect(args) as client:
        workflow_id = resolve_workflow(client, args.workflow) if args.workflow else _workflow_of(client, args.run)
        result = client.decide(workflow_id, args.run, decision, step_id=args.step, comment=args.comment or "")
    state = {"completed": "approved; the run continues", "failed": "rejected; the step failed",
             "awaiting_approval": "recorded; the step waits for more approvers"}.get(result.step_status or "", "")
    emit(args, result, f"{decision}d step {result.step_id} of run {result.run_id} as {result.decided_by}"
                       + (f": {state}" if state else ""))
    return OK


def _workflow_of(client, run_id: str) -> str:
    """The workflow of a run that waits for a decision (the v2 decision routes sit under the workflow)."""
    for pending in client.iter_approvals():
        if pending.run_id == run_id:
            return pending.workflow_id
    raise Conflict(409, f"Run {run_id} is not awaiting approval (or not found); give --workflow for a run "
                        "that is not in `weft approvals list`") from NotFound(404, "Run not found")


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    approvals = sub.add_parser("approvals", help="steps waiting for a decision; approve or reject them")
    asub = approvals.add_subparsers(dest="action", required=True)
    p = asub.add_parser("list", parents=[common], help="steps waiting for a decision, oldest first")
    p.add_argument("--workflow", help="only this workflow's (id or exact name)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(fn=guarded(_list))
    for verb in ("approve", "reject"):
        p = asub.add_parser(verb, parents=[common], help=f"{verb} a run's paused step as yourself")
        p.add_argument("run")
        p.add_argument("--step", help="the step (default: the first that paused)")
        p.add_argument("--comment", "-m", help="a note kept with the decision (some steps require one to reject)")
        p.add_argument("--workflow", help="the run's workflow (found from the pending list when omitted)")
        p.set_defaults(fn=guarded(lambda args, v=verb: _decide(args, v)))
