"""The OpenAI-compatible server behind serve.py: HTTP routes and errors (app.py), request schemas, the
generation worker (engine.py), SSE responses, and the chat page (static/index.html).

Not here: sampling and the KV cache (inference/) or loading a checkpoint by mode (inference/loading.py).
"""
from .app import ServerSettings, create_app
from .engine import Engine

__all__ = ["Engine", "ServerSettings", "create_app"]
