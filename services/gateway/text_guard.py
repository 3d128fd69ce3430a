"""Text Postgres cannot store is refused at the boundary: a NUL character anywhere a client sends text.

Postgres text and jsonb cannot hold U+0000. Left alone, such a value reaches an INSERT inside a consumer, which
fails there on every delivery (a 500 after the wait, or a 202 whose command is refused minutes later). Every
HTTP route runs this hook first, so the client gets a 400 naming the field, in the surface's own error shape.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import msgspec
from litestar import Request

from services.gateway.core.errors import ApiError

_NUL_JSON = b"\\u0000"


def _message(field: str | None) -> ApiError:
    where = field or "request"
    return ApiError(400, f"{where} must not contain NUL characters (\\u0000)", field)


def nul_path(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (key or value) holding a NUL character, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return child
            if (found := nul_path(item, child)) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := nul_path(item, f"{path}[{index}]")) is not None:
                return found
    return None


async def refuse_nul(request: Request) -> None:
    """Litestar before_request hook: 400 for a NUL in the path, the query string or the body."""
    if b"%00" in request.scope.get("raw_path", b"") or "\x00" in request.scope.get("path", ""):
        raise _message("path")
    query = request.scope.get("query_string", b"")
    if b"%00" in query:
        name = next((k for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
                     if "\x00" in k or "\x00" in v), None)
        raise _message(name)
    if request.method in ("GET", "HEAD", "OPTIONS", "DELETE") and not request.headers.get("content-length"):
        return
    body = await request.body()
    if _NUL_JSON in body:
        try:
            found = nul_path(msgspec.json.decode(body))
        except msgspec.DecodeError:
            return  # not JSON: the route's own parsing answers 400
        if found is not None:
            raise _message(found)
    elif b"\x00" in body or (b"%00" in body and b"\x00" in unquote_to_bytes(body)):
        raise _message(None)
