"""Answer shapes every surface shares: the `{"success": true, ...}` envelope, built once."""

from __future__ import annotations

from typing import Any

import msgspec


def envelope(name: str, module: str, **fields: Any) -> type[msgspec.Struct]:
    """A `{"success": true, <fields>}` answer type named `name` in the OpenAPI document (fields in order)."""
    return msgspec.defstruct(name, [("success", bool), *fields.items()], kw_only=True, module=module)


Message = envelope("Message", __name__, message=str)
