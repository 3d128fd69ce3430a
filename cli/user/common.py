"""What every user command shares: connection options, the client, output (--json or text), exit codes.

Exit codes (docs/decisions/0091-python-client-and-user-cli.md): 0 done; 1 the run failed or was terminated;
2 a bad request (usage, 400, 422); 3 not found; 4 conflict (409); 5 not allowed (401, 403); 6 rate limited;
7 the gateway is unavailable or unreachable, a command is still pending, or --wait timed out; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec

from weft_client import Client
from weft_client.errors import (
    ApiError,
    BadRequest,
    CommandPending,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    TransportError,
    Unauthorized,
    Unavailable,
    WeftError,
)

OK, RUN_FAILED, BAD_REQUEST, NOT_FOUND, CONFLICT, NOT_ALLOWED, RATE_LIMITED, UNAVAILABLE = 0, 1, 2, 3, 4, 5, 6, 7
INTERRUPTED = 130
_CODES: tuple[tuple[type[Exception], int], ...] = (
    (BadRequest, BAD_REQUEST), (NotFound, NOT_FOUND), (Conflict, CONFLICT), (Unauthorized, NOT_ALLOWED),
    (Forbidden, NOT_ALLOWED), (RateLimited, RATE_LIMITED), (Unavailable, UNAVAILABLE),
    (TransportError, UNAVAILABLE), (CommandPending, UNAVAILABLE),
)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def options() -> argparse.ArgumentParser:
    """The options every user command takes (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection and output")
    group.add_argument("--url", default=None,
                       help="the gateway (default $WEFT_URL, else http://127.0.0.1:$WEFT_PORT or :8000, `make up`)")
    group.add_argument("--token", default=None,
                       help="a user JWT (default $WEFT_TOKEN; for a local gateway a dev token from the local issuer)")
    group.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of text")
    return parent


def gateway_url(args: argparse.Namespace) -> str:
    return args.url or os.environ.get("WEFT_URL") or f"http://127.0.0.1:{os.environ.get('WEFT_PORT', '8000')}"


def dev_token(url: str) -> str | None:
    """For the local embedded stack only: a token minted with the local issuer, as `make up` prints one
    (tenant $WEFT_TENANT or acme, user $WEFT_USER or dev, email the default approver so the dev user may
    decide approval steps that name no approvers)."""
    if urlsplit(url).hostname not in LOCAL_HOSTS:
        return None
    from libs.events.settings import load_settings
    from libs.security.auth import issue_token

    settings = load_settings()
    return issue_token(settings, os.environ.get("WEFT_TENANT", "acme"), os.environ.get("WEFT_USER", "dev"),
                       ttl_s=3600, email=os.environ.get("WEFT_EMAIL") or settings.approval_email)


def connect(args: argparse.Namespace) -> Client:
    url = gateway_url(args)
    token = args.token or os.environ.get("WEFT_TOKEN") or dev_token(url)
    return Client(url, token=token, max_retries=3, max_rate_limit_wait_s=30.0)


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def emit(args: argparse.Namespace, value: Any, text: Callable[[Any], str] | str | None = None) -> None:
    """Print the result: JSON with --json, else the text rendering."""
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(to_builtins(value)), indent=2).decode() + "\n")
    elif text is not None:
        print(text(value) if callable(text) else text)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned columns, for humans."""
    cells = [[str(h) for h in header]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines) if rows else lines[0] + "\n(none)"


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command: errors become one line on stderr and an exit code, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except WeftError as exc:
            code = next((c for kind, c in _CODES if isinstance(exc, kind)), RUN_FAILED)
            if isinstance(exc, ApiError):
                where = f" ({exc.field})" if exc.field else ""
                message = f"{exc.message}{where} [HTTP {exc.status}]"
            else:
                message = str(exc)
            if isinstance(exc, TransportError):
                message += f"; is the gateway running at {gateway_url(args)}? (`make up`)"
            print(f"weft: {message}", file=sys.stderr)
            return code
        except TimeoutError as exc:  # `run --wait` ran out of time: the run goes on
            print(f"weft: {exc}", file=sys.stderr)
            return UNAVAILABLE
        except (ValueError, OSError) as exc:
            print(f"weft: {exc}", file=sys.stderr)
            return BAD_REQUEST
        except KeyboardInterrupt:
            print("weft: interrupted", file=sys.stderr)
            return INTERRUPTED

    return run


def key_values(pairs: Sequence[str] | None, what: str = "--input") -> dict[str, Any]:
    """k=v pairs; a value that parses as JSON (42, true, [1,2], {"a":1}, "quoted") is taken as that JSON."""
    values: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} must be key=value, got {pair!r}")
        try:
            values[key] = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            values[key] = raw
    return values


def resolve_workflow(client: Client, ref: str) -> str:
    """A workflow id from an id or an exact name."""
    return client.get_workflow(ref).id if _is_uuid(ref) else _by_name(client, ref)


def _by_name(client: Client, name: str) -> str:
    matches = [w.id for w in client.iter_workflows() if w.name == name]
    if not matches:
        raise NotFound(404, f"Workflow {name!r} not found")
    if len(matches) > 1:
        raise BadRequest(400, f"{len(matches)} workflows are named {name!r}; use an id")
    return matches[0]


def _is_uuid(ref: str) -> bool:
    import uuid

    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True
