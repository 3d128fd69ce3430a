"""Form input: read a submitted form, and turn a refusal into a message next to the field it names."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from litestar import Request

from services.gateway.core.errors import ApiError

MAX_FIELD = 100_000


class Form(msgspec.Struct):
    values: dict[str, str]
    lists: dict[str, list[str]]

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)


async def read(request: Request) -> Form:
    """The urlencoded or multipart form (text fields only; files are ignored), each value bounded."""
    data = await request.form()
    values: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for key, value in data.multi_items():
        if isinstance(value, str):
            value = value[:MAX_FIELD]
            values.setdefault(key, value)
            lists.setdefault(key, []).append(value)
    return Form(values=values, lists=lists)


def errors_of(exc: ApiError, fields: Sequence[str], default: str) -> dict[str, str]:
    """{form field: message}: the core names fields as the API does ("definition.nodes[0].type", "rate_limit
    .burst"), so the first known field the name starts with wins, else `default`."""
    named = exc.field or ""
    for field in fields:
        if named == field or named.startswith((f"{field}.", f"{field}[")):
            return {field: exc.message}
    return {default: exc.message}


def status_of(exc: ApiError) -> int:
    """A refused form is answered 4xx with the page and its messages (202: accepted but not yet committed)."""
    return exc.status if 400 <= exc.status < 500 or exc.status in (202, 503) else 400
