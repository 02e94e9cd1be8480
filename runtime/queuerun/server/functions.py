"""A functions-framework target serving the push server, for Cloud Run built from source.

Target name: ``queuerun``. In the app's ``main.py``::

    from queuerun.server.functions import queuerun  # noqa: F401

then ``functions-framework --target queuerun --asgi`` (on Cloud Run from source: the environment
``GOOGLE_FUNCTION_TARGET=queuerun`` and ``FUNCTION_USE_ASGI=1``). The App comes from
``QUEUERUN_APP`` ("module:attribute"), loaded on the first request. functions-framework hands every
path to this one async function; it routes them exactly as the uvicorn app does.
"""

from __future__ import annotations

import threading

from starlette.requests import Request
from starlette.responses import Response

from .app import PushServer

_server: PushServer | None = None
_lock = threading.Lock()


def _push_server() -> PushServer:
    global _server
    with _lock:
        if _server is None:
            from .logs import configure_logging
            from .serve import load_app

            configure_logging()
            _server = PushServer(load_app())
        return _server


async def queuerun(request: Request) -> Response:
    """functions-framework (ASGI) HTTP target: every request of the service comes through here."""
    return await _push_server().dispatch(request)
