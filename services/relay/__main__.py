"""Run the relay: python -m services.relay"""

from libs.events.settings import load_settings
from libs.runtime.service import serve
from services.relay.app import create_app

settings = load_settings(service="relay")
serve(create_app(settings), settings)
