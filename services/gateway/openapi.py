"""The served OpenAPI document: titled Weft, versioned, with both security schemes, at /schema."""

from __future__ import annotations

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag

API_VERSION = "2.0.0"

DESCRIPTION = """Weft's five HTTP surfaces over one core (DESIGN, "Surfaces"):

- **v2** `/api/v2/workflows`: the canonical tenant API (spec E), bearer JWT.
- **public** `/api/v1/public`: API-key access for customer websites (spec D), `Authorization: Bearer <key>`.
- **console** `/api/workflows`: goal -> plan -> approval -> runs (spec B), bearer JWT.
- **executions** `/api/workflows/execute`: executions with node states and logs (spec C), bearer JWT.
- **assistant** `/api/workflow`: one command -> plan -> run, streamed (spec A), bearer JWT.

A 2xx means the change is committed and readable at once. A 202 means accepted but not yet committed: poll the
`Location`. 503 (with `Retry-After`) means not accepted; retry with the same `Idempotency-Key`.
"""


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Weft",
        version=API_VERSION,
        description=DESCRIPTION,
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        components=Components(security_schemes={
            "bearerAuth": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT",
                                         description="A user JWT (`weft token` issues one for the embedded stack)"),
            "apiKey": SecurityScheme(type="http", scheme="bearer", bearer_format="weft API key",
                                     description="A public-API key (`weft api-key create`, shown once), sent as "
                                                 "`Authorization: Bearer <key>` (spec D)"),
        }),
        tags=[Tag(name=name) for name in ("v2: workflows", "public", "console", "executions", "assistant",
                                            "admin", "approvals", "streams")],
        use_handler_docstrings=True,
    )
