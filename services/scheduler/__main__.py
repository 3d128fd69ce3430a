"""Run the scheduler service: python -m services.scheduler"""

from libs.runtime.service import serve
from libs.events.settings import load_settings
from services.scheduler.app import create_app

settings = load_settings(service="scheduler")
serve(create_app(settings), settings)
