"""Run the notifier service: python -m services.notifier"""

from libs.runtime.service import serve
from libs.events.settings import load_settings
from services.notifier.app import create_app

settings = load_settings(service="notifier")
serve(create_app(settings), settings)
