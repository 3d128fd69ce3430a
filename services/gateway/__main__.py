"""Run the gateway service: python -m services.gateway"""

from libs.runtime.service import serve
from libs.events.settings import load_settings
from services.gateway.app import create_app

settings = load_settings(service="gateway")
serve(create_app(settings), settings)
