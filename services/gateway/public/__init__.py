"""The public API (spec D) at /api/v1/public: API-key auth and per-key rate limit on every route.

Routes: execute, status and results (executions.py) and the approval routes (approvals.py, written for
the approvals issue). Errors use D's shape {"message", "error", "statusCode"}.
"""

from litestar import Router
from litestar.di import Provide

from services.gateway.public import executions
from services.gateway.public.auth import ApiKeyPrincipal, api_key_middleware, provide_api_key
from services.gateway.public.errors import EXCEPTION_HANDLERS, PublicApiError, with_public_routing_errors

try:
    from services.gateway.public.approvals import route_handlers as approval_routes
except ModuleNotFoundError as exc:  # only a missing approvals module; an error inside it must surface
    if exc.name != "services.gateway.public.approvals":
        raise
    approval_routes = []

router = Router(
    path="/api/v1/public",
    route_handlers=[*executions.route_handlers, *approval_routes],
    dependencies={"api_key": Provide(provide_api_key, sync_to_thread=False)},
    exception_handlers=EXCEPTION_HANDLERS,
    tags=["public"],
    security=[{"apiKey": []}],
)

# Wraps the whole app (services/gateway/app.py), so that routing errors under the prefix pass through it too.
middleware = api_key_middleware

__all__ = ["ApiKeyPrincipal", "PublicApiError", "middleware", "router", "with_public_routing_errors"]
