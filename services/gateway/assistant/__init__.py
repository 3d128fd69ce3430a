"""The assistant contract (spec A): its routers, and A's error shape for routing errors under its paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from services.gateway.assistant import accounts, actions, history, workflow
from services.gateway.errors import PLAIN_EXCEPTION_HANDLERS

# A's paths. "/api/workflow" is matched as a whole segment: "/api/workflows" is the console's (B).
PREFIXES = ("/api/workflow", "/api/history", "/api/auth", "/api/quick-actions", "/api/feedback")

routers = (workflow.router, history.router, actions.actions_router, actions.feedback_router, accounts.router,
           accounts.callback_router)


def is_assistant_path(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PREFIXES)


def with_assistant_routing_errors(handlers: Mapping[Any, Any]) -> dict[Any, Any]:
    """The app's handlers, except that routing errors (404 no such path, 405 wrong method) under A's paths come
    in A's shape {"error","message"}: no assistant route ran, so its routers' handlers never see them."""
    app_handler = handlers[HTTPException]
    plain = PLAIN_EXCEPTION_HANDLERS[HTTPException]

    def routing_aware(request: Request, exc: HTTPException) -> Response:
        if is_assistant_path(request.url.path):
            if exc.status_code == 404:
                exc = HTTPException(status_code=404, detail=f"Cannot {request.method} {request.url.path}")
            return plain(request, exc)
        return app_handler(request, exc)

    return {**handlers, HTTPException: routing_aware}


__all__ = ["PREFIXES", "is_assistant_path", "routers", "with_assistant_routing_errors"]
