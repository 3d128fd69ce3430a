"""The console surface (spec B) at /api/workflows: a thin typed adapter over the core, in the console's words."""

from litestar import Router
from litestar.di import Provide

from services.gateway.auth import authenticate
from services.gateway.console.routes import (
    create_from_goal,
    diff_plan_versions,
    edit_steps,
    get_workflow,
    list_plan_versions,
    list_workflows,
    run_workflow,
    stop_run,
)
from services.gateway.core.errors import WORKFLOW_NOT_ACTIVE
from services.gateway.errors import handlers, plain_error_body

# B: "Workflow must have status: active (returns 422 otherwise)".
STATUS_FOR = {WORKFLOW_NOT_ACTIVE: 422}

router = Router(
    path="/api/workflows",
    route_handlers=[create_from_goal, list_workflows, get_workflow, edit_steps, list_plan_versions, diff_plan_versions,
                    run_workflow, stop_run],
    dependencies={"principal": Provide(authenticate)},
    exception_handlers=handlers(plain_error_body, STATUS_FOR),
    tags=["console"],
    security=[{"bearerAuth": []}],
)

__all__ = ["router"]
