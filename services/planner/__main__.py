"""Run the planner service: python -m services.planner"""

from libs.runtime.service import serve
from libs.events.settings import load_settings
from services.planner.app import create_app

settings = load_settings(service="planner")
serve(create_app(settings), settings)
