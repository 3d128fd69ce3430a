"""`${path}` templates over run inputs, step outputs and variables. A missing path is an error."""

from __future__ import annotations

import re
from typing import Any

_TEMPLATE = re.compile(r"\$\{([^}]+)\}")
_MISSING = object()


class MissingPath(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(f"${{{path}}} does not resolve: no value at {path!r}")
        self.path = path


def lookup(context: dict[str, Any], path: str) -> Any:
    """Follow a dotted path (`a.b.0.c`, optional leading `$.`) through dicts and lists."""
    value: Any = context
    for part in path.strip().removeprefix("$.").split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def interpolate(template: Any, context: dict[str, Any]) -> Any:
    """Resolve templates recursively. A string that is exactly one `${path}` keeps the value's type."""
    if isinstance(template, dict):
        return {key: interpolate(value, context) for key, value in template.items()}
    if isinstance(template, list):
        return [interpolate(value, context) for value in template]
    if not isinstance(template, str) or "${" not in template:
        return template
    whole = _TEMPLATE.fullmatch(template)
    if whole:
        value = lookup(context, whole.group(1))
        if value is _MISSING:
            raise MissingPath(whole.group(1))
        return value

    def substitute(match: re.Match[str]) -> str:
        value = lookup(context, match.group(1))
        if value is _MISSING:
            raise MissingPath(match.group(1))
        return value if isinstance(value, str) else _to_text(value)

    return _TEMPLATE.sub(substitute, template)


def _to_text(value: Any) -> str:
    import msgspec

    return msgspec.json.encode(value).decode()
