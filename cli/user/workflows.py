"""`weft workflows list|get|create|delete` and `weft parse`: workflows as a user sees them."""

from __future__ import annotations

import argparse
import pathlib

import msgspec

from cli.user.common import OK, connect, emit, guarded, resolve_workflow, table


def _list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        page = client.list_workflows(status=args.status, limit=args.limit, offset=args.offset)
    emit(args, {"workflows": page.items, "count": page.count}, lambda _: table(
        [(w.id, w.name, w.status, w.version, w.updated_at) for w in page.items],
        ("ID", "NAME", "STATUS", "VERSION", "UPDATED")) + _more(page.count, args.offset, len(page.items)))
    return OK


def _more(count: int, offset: int, shown: int) -> str:
    rest = count - offset - shown
    return f"\n... {rest} more (--offset {offset + shown})" if rest > 0 else ""


def _get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        workflow = client.get_workflow(resolve_workflow(client, args.workflow))
    steps = workflow.definition.get("nodes") or []

    def text(_: object) -> str:
        head = f"{workflow.name}  ({workflow.id})\nstatus {workflow.status}, version {workflow.version}, " \
               f"updated {workflow.updated_at}"
        if workflow.description:
            head += f"\n{workflow.description}"
        rows = [(s.get("id"), s.get("type"), s.get("action") or "", s.get("input_from") or "") for s in steps]
        return head + "\n\n" + table(rows, ("STEP", "TYPE", "ACTION", "INPUT FROM"))

    emit(args, workflow, text)
    return OK


def _create(args: argparse.Namespace) -> int:
    """From a JSON file: either {"name", "definition", ...} or a bare definition {"nodes": [...]} with --name."""
    raw = pathlib.Path(args.file).read_bytes() if args.file != "-" else __import__("sys").stdin.buffer.read()
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{args.file} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{args.file} must hold a JSON object")
    definition = doc.get("definition", doc if "nodes" in doc else None)
    name = args.name or doc.get("name")
    if not name or definition is None:
        raise ValueError("the file needs a name and a definition ({\"name\", \"definition\": {\"nodes\": [...]}}), "
                         "or a bare definition with --name")
    with connect(args) as client:
        workflow = client.create_workflow(name, definition, description=doc.get("description"),
                                          version=doc.get("version"), idempotency_key=args.idempotency_key)
    emit(args, workflow, lambda w: f"created {w.id}  {w.name}  ({w.status})")
    return OK


def _delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        workflow_id = resolve_workflow(client, args.workflow)
        message = client.delete_workflow(workflow_id)
    emit(args, {"id": workflow_id, "message": message}, f"deleted {workflow_id}")
    return OK


def _parse(args: argparse.Namespace) -> int:
    with connect(args) as client:
        plan = client.parse(args.instruction, available_tools=args.tool or None)

    def text(_: object) -> str:
        rows = [(s.get("id"), s.get("type"), s.get("action") or "", s.get("input_from") or "") for s in plan.steps]
        lines = [f"{plan.name}: {plan.description}",
                 f"confidence {plan.confidence:.2f}, source {plan.source}, estimated cost ${plan.estimatedCostUsd:.4f}"]
        if plan.schedule:
            lines.append(f"schedule {plan.schedule}")
        if plan.outboundSteps:
            lines.append("sends outside Weft: " + ", ".join(plan.outboundSteps))
        if plan.message:
            lines.append(plan.message)
        return "\n".join(lines) + "\n\n" + table(rows, ("STEP", "TYPE", "ACTION", "INPUT FROM"))

    emit(args, plan, text)
    return OK


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    workflows = sub.add_parser("workflows", help="list, show, create and delete workflows")
    wsub = workflows.add_subparsers(dest="action", required=True)
    p = wsub.add_parser("list", parents=[common], help="the tenant's workflows, newest first")
    p.add_argument("--status", choices=("active", "archived"))
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(fn=guarded(_list))
    p = wsub.add_parser("get", parents=[common], help="a workflow and its steps")
    p.add_argument("workflow", help="id or exact name")
    p.set_defaults(fn=guarded(_get))
    p = wsub.add_parser("create", parents=[common], help="create a workflow from a JSON file")
    p.add_argument("-f", "--file", required=True, help='JSON: {"name", "definition": {"nodes": [...]}} ("-": stdin)')
    p.add_argument("--name", help="the name (overrides the file's)")
    p.add_argument("--idempotency-key", help="repeat-safe: the same key creates one workflow")
    p.set_defaults(fn=guarded(_create))
    p = wsub.add_parser("delete", parents=[common], help="delete a workflow and its history")
    p.add_argument("workflow", help="id or exact name")
    p.set_defaults(fn=guarded(_delete))
    p = sub.add_parser("parse", parents=[common], help="plan a workflow from plain language (creates nothing)")
    p.add_argument("instruction")
    p.add_argument("--tool", action="append", help="an available tool (repeatable)")
    p.set_defaults(fn=guarded(_parse))
