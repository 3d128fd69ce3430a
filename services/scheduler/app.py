"""Scheduler composition root. Runs, connects and reports health; its commands arrive with their issues."""

from __future__ import annotations

from litestar import Litestar

from libs.events.service import create_service_app
from libs.events.settings import Settings, load_settings

SERVICE = "scheduler"


def create_app(settings: Settings | None = None) -> Litestar:
    return create_service_app(settings or load_settings(service=SERVICE), name=SERVICE)
