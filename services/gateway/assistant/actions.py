"""Contract A's quick actions (GET /api/quick-actions, POST /api/quick-actions/favorite) and feedback
(POST /api/feedback); POST /api/quick-actions defines a tenant's own action (beyond A)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from libs.security.auth import Principal
from services.gateway.assistant.common import assistant_router
from services.gateway.core import Core, feedback, quick_actions
from services.gateway.core.quick_actions import QuickAction
from services.gateway.core.ids import parse_id
from services.gateway.errors import PlainError, responses

Short = Annotated[str, msgspec.Meta(max_length=100)]


class ActionView(QuickAction, frozen=True, kw_only=True):
    """A catalogue entry as this user sees it."""

    isFavorite: bool  # noqa: N815
    usageCount: int  # noqa: N815


class Actions(msgspec.Struct, kw_only=True):
    actions: list[ActionView]


class NewAction(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: Short
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    description: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    template: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    icon: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    category: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]


class FavoriteBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    actionId: Short  # noqa: N815
    isFavorite: bool  # noqa: N815


class Favorites(msgspec.Struct, kw_only=True):
    success: bool
    favoriteActions: list[str]  # noqa: N815


class FeedbackBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    workflowId: Short  # noqa: N815
    rating: Annotated[str, msgspec.Meta(max_length=20)]
    resultId: Short | None = None  # noqa: N815
    comment: Annotated[str, msgspec.Meta(max_length=10000)] | None = None


class Done(msgspec.Struct, kw_only=True):
    success: bool
    message: str


@get("/", responses=responses(PlainError))
async def list_actions(principal: NamedDependency[Principal], core: NamedDependency[Core]) -> Actions:
    """Every quick action (built in, then the tenant's), with the caller's favorites and usage counts."""
    listed = await quick_actions.listing(core, principal)
    return Actions(actions=[ActionView(**msgspec.structs.asdict(x.action), isFavorite=x.is_favorite,
                                       usageCount=x.usage_count) for x in listed])


@post("/", status_code=201, responses=responses(PlainError, 409))
async def define_action(principal: NamedDependency[Principal], core: NamedDependency[Core],
                        data: JSONBody[NewAction]) -> ActionView:
    action = await quick_actions.define(core, principal, quick_actions.QuickAction(**msgspec.structs.asdict(data)))
    return ActionView(**msgspec.structs.asdict(action), isFavorite=False, usageCount=0)


@post("/favorite", status_code=200, responses=responses(PlainError, 404))
async def favorite(principal: NamedDependency[Principal], core: NamedDependency[Core],
                   data: JSONBody[FavoriteBody]) -> Favorites:
    """Add or remove a favorite; at most 20 per user, the oldest dropped when a 21st is added."""
    ids = await quick_actions.set_favorite(core, principal, data.actionId, data.isFavorite)
    return Favorites(success=True, favoriteActions=ids)


@post("/", status_code=200, responses=responses(PlainError, 403, 404))
async def give_feedback(principal: NamedDependency[Principal], core: NamedDependency[Core],
                        data: JSONBody[FeedbackBody]) -> Done:
    """Rate a result of one of the caller's workflows (rating: positive | negative)."""
    await feedback.give(core, principal, parse_id(data.workflowId, "Workflow", "workflowId"), data.resultId,
                        data.rating, data.comment)
    return Done(success=True, message="Feedback recorded successfully")


actions_router = assistant_router("/api/quick-actions", [list_actions, define_action, favorite])
feedback_router = assistant_router("/api/feedback", [give_feedback])
