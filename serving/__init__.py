"""The OpenAI-compatible server behind serve.py: HTTP app, generation worker, chat page."""
from .app import ServerSettings, create_app
from .engine import Engine

__all__ = ["Engine", "ServerSettings", "create_app"]
