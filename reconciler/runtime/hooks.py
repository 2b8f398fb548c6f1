"""The webhook a forge calls on push: it only wakes the site's agent to reconcile now instead of at
its next poll. Nothing in the request is trusted or read; the agent fetches and verifies as always,
so the endpoint needs no secret (a stranger can at most cause an early poll)."""

from __future__ import annotations

import threading

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

HOOK_PATH = "/v1/hooks/reconcile"


def hook_routes(wake: threading.Event) -> list[Route]:
    async def reconcile_now(request: Request) -> JSONResponse:
        wake.set()
        return JSONResponse({"accepted": True}, status_code=202)

    return [Route(HOOK_PATH, reconcile_now, methods=["POST"])]
