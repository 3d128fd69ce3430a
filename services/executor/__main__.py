"""Run the executor service: python -m services.executor"""

from libs.runtime.service import serve
from libs.events.settings import load_settings
from services.executor.app import create_app

settings = load_settings(service="executor")
serve(create_app(settings), settings)
