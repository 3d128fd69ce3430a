"""Small ASGI helpers for the gateway's middlewares, which answer or decorate before a route runs."""

from __future__ import annotations

from litestar.types import Message, Scope, Send


def bearer_token(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def answer(send: Send, status: int, payload: bytes, headers: dict[str, str]) -> None:
    """A whole JSON response, sent without running the route."""
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *_raw(headers)]})
    await send({"type": "http.response.body", "body": payload})


def with_headers(send: Send, headers: dict[str, str]) -> Send:
    """`send` that adds `headers` to the response start, whatever produced the response (route or error)."""
    extra = _raw(headers)

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return wrapped
