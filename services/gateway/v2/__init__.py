"""The v2 tenant API (spec E): workflow CRUD, parse, execute, runs, schedules. A thin typed adapter over the core."""

from litestar import Router
from litestar.di import Provide

from services.gateway.auth import authenticate
from services.gateway.errors import EXCEPTION_HANDLERS_V2
from services.gateway.v2.approvals import approve_step, list_approvals, reject_step
from services.gateway.v2.parse import parse_instruction
from services.gateway.v2.runs import execute_workflow, get_run, list_runs, terminate_run
from services.gateway.v2.schedules import (
    create_schedule,
    delete_schedule,
    get_schedule,
    list_occurrences,
    list_schedules,
    patch_schedule,
)
from services.gateway.v2.workflows import (
    command_status,
    create_workflow,
    delete_workflow,
    get_schema,
    get_workflow,
    health,
    list_workflows,
    patch_workflow,
)

router = Router(
    path="/api/v2/workflows",
    route_handlers=[
        health, parse_instruction, list_workflows, create_workflow, get_workflow, patch_workflow, delete_workflow,
        execute_workflow, get_schema, list_runs, get_run, terminate_run, command_status,
        create_schedule, list_schedules, get_schedule, patch_schedule, delete_schedule, list_occurrences,
        list_approvals, approve_step, reject_step,
    ],
    dependencies={"principal": Provide(authenticate)},
    exception_handlers=EXCEPTION_HANDLERS_V2,
    tags=["v2: workflows"],
    security=[{"bearerAuth": []}],
)

__all__ = ["router"]
