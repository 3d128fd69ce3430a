"""`weft agents create|list|show|update|delete`: the tenant's agent definitions, over the v2 API.

The auth secret is read from an environment variable or stdin (never a command-line argument, which other
users of the machine can see in the process list), sent once, stored encrypted; nothing prints it back.
Exit codes as the user commands' (cli/user/common.py): 2 bad request, 3 not found, 4 conflict, 5 not allowed.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import httpx

from cli.user.common import BAD_REQUEST, CONFLICT, NOT_ALLOWED, NOT_FOUND, OK, UNAVAILABLE, emit, gateway_url, options
from cli.user.common import dev_token, table

_EXIT = {400: BAD_REQUEST, 422: BAD_REQUEST, 401: NOT_ALLOWED, 403: NOT_ALLOWED, 404: NOT_FOUND, 409: CONFLICT}


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    url = gateway_url(args)
    token = args.token or os.environ.get("WEFT_TOKEN") or dev_token(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.request(method, f"{url}/api/v2/agents{path}", json=body, headers=headers, timeout=30)
    payload = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code >= 400:
        where = f" ({payload['field']})" if payload.get("field") else ""
        raise _Refused(response.status_code, f"{payload.get('error') or response.text}{where} "
                                             f"[HTTP {response.status_code}]")
    return payload


def _secret(args: argparse.Namespace) -> str | None:
    if getattr(args, "secret_env", None):
        value = os.environ.get(args.secret_env)
        if not value:
            raise _Refused(400, f"--secret-env: ${args.secret_env} is not set or empty")
        return value
    if getattr(args, "secret_stdin", False):
        return sys.stdin.readline().rstrip("\r\n") or None
    return None


def _line(agent: dict[str, Any]) -> str:
    secret = "with a secret" if agent["has_secret"] else "no secret"
    return f"agent {agent['name']} ({agent['id']}): {agent['endpoint']}, timeout {agent['timeout_s']:g} s, {secret}"


def _create(args: argparse.Namespace) -> dict[str, Any]:
    body = {"name": args.name, "endpoint": args.endpoint, "timeout_s": args.timeout,
            "prompt_template": args.prompt_template, "secret": _secret(args)}
    return _call(args, "POST", "", body)["agent"]


def _update(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {k: v for k, v in (("name", args.name), ("endpoint", args.endpoint),
                                              ("timeout_s", args.timeout), ("prompt_template", args.prompt_template))
                            if v is not None}
    if args.remove_secret:
        body["secret"] = None
    elif (secret := _secret(args)) is not None:
        body["secret"] = secret
    return _call(args, "PATCH", f"/{args.agent}", body)["agent"]


def _run(args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            page = _call(args, "GET", f"?limit={args.limit}&offset={args.offset}")
            emit(args, page, lambda p: table([(a["id"], a["name"], a["endpoint"], a["timeout_s"], a["has_secret"])
                                              for a in p["agents"]], ("ID", "NAME", "ENDPOINT", "TIMEOUT", "SECRET")))
        elif args.action == "delete":
            emit(args, _call(args, "DELETE", f"/{args.agent}"), f"deleted agent {args.agent}")
        else:
            agent = {"create": _create, "update": _update,
                     "show": lambda a: _call(a, "GET", f"/{a.agent}")["agent"]}[args.action](args)
            emit(args, agent, _line)
        return OK
    except _Refused as exc:
        print(f"weft: {exc}", file=sys.stderr)
        return _EXIT.get(exc.status, UNAVAILABLE if exc.status >= 500 else BAD_REQUEST)
    except httpx.HTTPError as exc:
        print(f"weft: {exc}; is the gateway running at {gateway_url(args)}? (`make up`)", file=sys.stderr)
        return UNAVAILABLE


def _definition_options(p: argparse.ArgumentParser, *, creating: bool) -> None:
    p.add_argument("--name", required=creating)
    p.add_argument("--endpoint", required=creating, help="the agent's http(s) URL (called through the guarded client)")
    p.add_argument("--timeout", type=float, default=30.0 if creating else None, help="seconds per call")
    p.add_argument("--prompt-template", help="wraps each step's prompt, e.g. 'You are a sales analyst. ${prompt}'")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--secret-env", metavar="VAR", help="read the auth secret from this environment variable")
    secret.add_argument("--secret-stdin", action="store_true", help="read the auth secret from stdin (one line)")
    if not creating:
        secret.add_argument("--remove-secret", action="store_true")


def add_parser(sub: argparse._SubParsersAction) -> None:
    common = options()
    agents = sub.add_parser("agents", help="agent definitions an agent step calls (secrets stored encrypted)")
    asub = agents.add_subparsers(dest="action", required=True)
    _definition_options(asub.add_parser("create", parents=[common], help="define an agent"), creating=True)
    p = asub.add_parser("list", parents=[common], help="the tenant's agents")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    for verb in ("show", "delete"):
        asub.add_parser(verb, parents=[common], help=f"{verb} an agent").add_argument("agent", help="its id")
    p = asub.add_parser("update", parents=[common], help="change an agent's fields")
    p.add_argument("agent", help="its id")
    _definition_options(p, creating=False)
    agents.set_defaults(fn=_run)
    for parser in asub.choices.values():
        parser.set_defaults(fn=_run)
