"""What every router of the assistant surface shares: A's error shape, its tag and (but for the OAuth
callback, which the provider calls) the bearer JWT."""

from __future__ import annotations

from collections.abc import Sequence

from litestar import Router
from litestar.di import Provide

from services.gateway.auth import authenticate
from services.gateway.errors import handlers, plain_error_body


def assistant_router(path: str, route_handlers: Sequence, *, signed_in: bool = True) -> Router:
    auth = {"dependencies": {"principal": Provide(authenticate)}, "security": [{"bearerAuth": []}]} if signed_in else {}
    return Router(path=path, route_handlers=list(route_handlers), exception_handlers=handlers(plain_error_body),
                  tags=["assistant"], **auth)
