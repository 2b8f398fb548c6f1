"""The fleet's flags for the site's own applications, over the OpenFeature Remote Evaluation Protocol
(OFREP, open-feature/protocol service/openapi.yaml), so any OpenFeature SDK with the OFREP provider
reads the same flags the agent acts on, evaluated with the site as context.

- ``POST /ofrep/v1/evaluate/flags/{key}``: 200 ``{key, value, reason, variant, metadata}``; 404
  ``{key, errorCode: FLAG_NOT_FOUND, errorDetails}``; 400 ``{key, errorCode, errorDetails}`` for
  any other evaluation error or a malformed request (INVALID_CONTEXT).
- ``POST /ofrep/v1/evaluate/flags``: 200 ``{flags: [...]}``, one success or failure object per
  enabled flag, with an ``ETag`` of the body; a matching ``If-None-Match`` gets 304. A malformed
  request gets 400 ``{errorCode, errorDetails}``.
- A resolution that defers to the caller's code default (a disabled flag, a flag without a default
  variant) carries no ``value`` and no ``variant``, as OFREP's ``codeDefaultFlag`` says.

The request's ``context`` is laid over the site's context (``targetingKey`` = site name, its
labels), so an application may narrow targeting to its own users."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reconciler.flags import ErrorCode, FlagSet, Resolution, evaluate, evaluate_all

FlagSource = Callable[[], tuple[FlagSet, Mapping[str, Any]]]


class _BadRequest(ValueError):
    """The request body is not an OFREP evaluation request."""


def ofrep_routes(
    get_flags: FlagSource, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> list[Route]:
    """The OFREP endpoints over the flags ``get_flags`` returns at each request, with the site
    context to evaluate them in (ModelRegistry.flags fits)."""

    async def evaluate_one(request: Request) -> Response:
        key = request.path_params["key"]
        flags, site_context = get_flags()
        try:
            context = await _context(request, site_context)
        except _BadRequest as exc:
            return _json(400, {"key": key, "errorCode": ErrorCode.INVALID_CONTEXT, "errorDetails": str(exc)})
        resolution = evaluate(flags, key, context, clock())
        if resolution.error_code is None:
            return _json(200, _success(resolution))
        status = 404 if resolution.error_code == ErrorCode.FLAG_NOT_FOUND else 400
        return _json(status, _failure(resolution))

    async def evaluate_bulk(request: Request) -> Response:
        flags, site_context = get_flags()
        try:
            context = await _context(request, site_context)
        except _BadRequest as exc:
            return _json(400, {"errorCode": ErrorCode.INVALID_CONTEXT, "errorDetails": str(exc)})
        resolutions = evaluate_all(flags, context, clock())
        results = [
            _success(resolution) if resolution.error_code is None else _failure(resolution)
            for _, resolution in sorted(resolutions.items())
        ]
        body = _encode({"flags": results})
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type="application/json", headers={"ETag": etag})

    return [
        Route("/ofrep/v1/evaluate/flags/{key}", evaluate_one, methods=["POST"]),
        Route("/ofrep/v1/evaluate/flags", evaluate_bulk, methods=["POST"]),
    ]


async def _context(request: Request, site_context: Mapping[str, Any]) -> dict[str, Any]:
    """The site's context with the request's ``context`` laid over it. OFREP makes the body and its
    context optional, so an empty body evaluates with the site's context alone."""
    body = await request.body()
    try:
        document = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _BadRequest("request body must be a JSON object")
    requested = document.get("context")
    if requested is None:  # absent or null: the site's context alone
        return dict(site_context)
    if not isinstance(requested, dict):
        raise _BadRequest("'context' must be a JSON object")
    return {**site_context, **requested}


def _success(resolution: Resolution) -> dict[str, Any]:
    result: dict[str, Any] = {"key": resolution.key, "reason": str(resolution.reason)}
    if resolution.variant is not None:  # otherwise the caller's code default stands
        result["value"] = resolution.value
        result["variant"] = resolution.variant
    result["metadata"] = resolution.flag_metadata
    return result


def _failure(resolution: Resolution) -> dict[str, Any]:
    return {"key": resolution.key, "errorCode": str(resolution.error_code), "errorDetails": resolution.error_message}


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison: a list of entity tags, each maybe W/-prefixed, or ``*``."""
    if if_none_match is None:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or etag in (tag.removeprefix("W/") for tag in tags)


def _encode(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _json(status: int, document: Any) -> Response:
    return Response(_encode(document), status_code=status, media_type="application/json")
