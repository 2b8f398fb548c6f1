"""The site's inference server: Open Inference Protocol v2 REST over the registry's sessions, routed
between stable and canary (routing.py), and Prometheus metrics per deployment and version (which
the in-site canary analysis also reads), served by uvicorn from a background thread of the agent's
own process."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from reconciler import __version__, reasons
from reconciler.errors import NeedsOperator, Transient
from reconciler.runtime import binary, model_info, oip
from reconciler.runtime.batching import Batchers
from reconciler.runtime.inference import ERROR, INVALID, SUCCESS, Answer, Inference
from reconciler.runtime.metrics import RuntimeMetrics
from reconciler.runtime.registry import ModelRegistry, NotServed, Served
from reconciler.runtime.routing import Router, ShadowRunner

ROUTING_KEY_HEADER = "x-routing-key"
VERSION_HEADER = "x-model-version"

# --- the OIP v2 application ---------------------------------------------------------------------

# What GET /v2 lists: only what is served. Triton's model_repository extension also loads and
# unloads models, which only the agent does here; its index endpoint alone is served.
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
_DECOMPRESS = {"gzip": gzip.decompress, "deflate": zlib.decompress}


def build_app(
    registry: ModelRegistry,
    *,
    site: str,
    metrics: RuntimeMetrics | None = None,
    router: Router | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The app; ``app.state.metrics`` is its RuntimeMetrics, ``app.state.shadow`` the runner of
    mirrored requests, which runs while the app is served, and ``app.state.inference`` the
    protocol-neutral request path (inference.py) another protocol's server can share. ``router``
    decides which version answers (a seeded one makes weighted routing repeatable);
    ``extra_routes`` mount other endpoints (OFREP flags) beside the inference API."""
    metrics = metrics or RuntimeMetrics(registry)
    shadow = ShadowRunner(metrics.record_shadow, metrics.record_shadow_dropped)
    batchers = Batchers(registry, metrics.record_batch)
    inference = Inference(router or Router(registry), metrics, shadow, batchers)
    api = _InferenceApi(registry, inference, metrics, site)
    routes = [
        Route("/v2", api.server_metadata),
        Route("/v2/health/live", api.live),
        Route("/v2/health/ready", api.ready),
        Route("/v2/models/stats", api.statistics),
        Route("/v2/models/{name}", api.model_metadata),
        Route("/v2/models/{name}/versions/{version}", api.model_metadata),
        Route("/v2/models/{name}/ready", api.model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", api.model_ready),
        Route("/v2/models/{name}/config", api.model_config),
        Route("/v2/models/{name}/versions/{version}/config", api.model_config),
        Route("/v2/models/{name}/stats", api.statistics),
        Route("/v2/models/{name}/versions/{version}/stats", api.statistics),
        Route("/v2/models/{name}/infer", api.infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", api.infer, methods=["POST"]),
        Route("/v2/repository/index", api.repository_index, methods=["POST"]),
        Route("/metrics", api.metrics),
        *extra_routes,
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        shadow.start()
        try:
            yield
        finally:
            shadow.close()

    handlers = {HTTPException: _http_error, Exception: _internal_error}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.metrics = metrics
    app.state.shadow = shadow
    app.state.inference = inference
    return app


_STATUS = {SUCCESS: 200, INVALID: 400, ERROR: 500}


class _InferenceApi:
    def __init__(self, registry: ModelRegistry, inference: Inference, metrics: RuntimeMetrics, site: str):
        self._registry = registry
        self._inference = inference
        self._metrics = metrics
        self._site = site

    async def server_metadata(self, request: Request) -> Response:
        metadata = {"name": "reconciler", "version": __version__, "extensions": EXTENSIONS, "site": self._site}
        return JSONResponse(metadata)

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self._registry.ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        try:
            served = self._lookup(request)
        except NotServed as exc:
            return _error(404, str(exc))
        loaded = self._registry.state().get(served.deployment)
        return JSONResponse(
            {
                "name": served.deployment,
                "versions": [s.version for s in loaded.versions()] if loaded else [served.version],
                "platform": "onnxruntime",
                "inputs": [oip.tensor_metadata(spec) for spec in served.interface.inputs],
                "outputs": [oip.tensor_metadata(spec) for spec in served.interface.outputs],
            },
            headers={VERSION_HEADER: served.version},
        )

    async def model_ready(self, request: Request) -> Response:
        try:
            served = self._lookup(request)
        except NotServed as exc:
            return _error(404, str(exc))
        return JSONResponse({"name": served.deployment, "ready": True})

    async def model_config(self, request: Request) -> Response:
        try:
            served = self._lookup(request)
        except NotServed as exc:
            return _error(404, str(exc))
        config = model_info.model_config(served, self._registry.batching(served.deployment))
        return JSONResponse(config, headers={VERSION_HEADER: served.version})

    async def statistics(self, request: Request) -> Response:
        """Every loaded version's, one deployment's (each of its versions) or one version's."""
        name, version = request.path_params.get("name"), request.path_params.get("version")
        try:
            if name is None:
                versions = [s for loaded in self._registry.state().values() for s in loaded.versions()]
            elif version is None:
                versions = self._registry.loaded(name).versions()
            else:
                versions = [self._registry.get(name, version)]
        except NotServed as exc:
            return _error(404, str(exc))
        return JSONResponse(model_info.statistics(self._metrics.snapshot(), versions))

    async def repository_index(self, request: Request) -> Response:
        return JSONResponse(model_info.repository_index(self._registry.state()))

    async def infer(self, request: Request) -> Response:
        started = time.perf_counter()
        body = await request.body()
        name, pinned = request.path_params["name"], request.path_params.get("version")
        try:
            encoded = await run_in_threadpool(self._answer, name, pinned, request.headers, body, started)
        except NotServed as exc:
            return _error(404, str(exc))
        answer = encoded.answer
        headers = {VERSION_HEADER: answer.served.version}
        self._inference.record(answer)
        if answer.outcome != SUCCESS:
            return _error(_STATUS[answer.outcome], answer.message, headers)
        content, header_length = encoded.content
        if header_length is None:
            return Response(content, media_type="application/json", headers=headers)
        headers[binary.HEADER_LENGTH] = str(header_length)
        return Response(content, media_type="application/octet-stream", headers=headers)

    def _answer(self, name: str, pinned: str | None, headers: Headers, body: bytes, started: float) -> _Encoded:
        """Runs in a worker thread: decoding, routing, the model and encoding all stay off the
        event loop. A body too broken to read a routing key from is still charged to the version
        the rest of the request routes to."""
        header_key = headers.get(ROUTING_KEY_HEADER)
        try:
            envelope = oip.parse_document(_decompressed(body, headers), headers.get(binary.HEADER_LENGTH))
        except oip.RequestError as exc:
            return _Encoded(self._inference.refuse(name, str(exc), pinned=pinned, key=header_key))
        answer = self._inference.infer(
            name,
            lambda interface: oip.decode_document(envelope, interface),
            pinned=pinned,
            key=header_key or envelope.routing_key,
            started=started,
        )
        if answer.outcome != SUCCESS or answer.request is None:
            return _Encoded(answer)
        request = answer.request
        try:
            content = oip.encode_response(
                answer.served.deployment, answer.served.version, request.id, answer.outputs, request.binary_outputs
            )
        except TypeError as exc:  # an output of a type the protocol has no datatype for
            return _Encoded(answer.failure(exc))
        return _Encoded(answer, content)

    async def metrics(self, request: Request) -> Response:
        return Response(self._metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def _lookup(self, request: Request) -> Served:
        return self._registry.get(request.path_params["name"], request.path_params.get("version"))


@dataclass(frozen=True)
class _Encoded:
    """An Answer with its response body and, for binary tensor data, the JSON header's length."""

    answer: Answer
    content: tuple[bytes, int | None] = (b"", None)


def _decompressed(body: bytes, headers: Headers) -> bytes:
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in _DECOMPRESS:
        raise oip.RequestError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    try:
        return _DECOMPRESS[encoding](body)
    except (OSError, zlib.error, EOFError) as exc:
        raise oip.RequestError(f"request body is not valid {encoding}: {exc}") from None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, method not allowed) in the protocol's error shape."""
    assert isinstance(exc, HTTPException)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return _error(exc.status_code, message, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A fault of the runtime itself, in the protocol's error shape (uvicorn logs the traceback)."""
    return _error(500, f"{request.method} {request.url.path}: internal error: {type(exc).__name__}: {exc}")


# --- the server thread ----------------------------------------------------------------------------


class RuntimeServer:
    """uvicorn in a background thread of the calling process. ``port`` 0 binds an ephemeral port;
    after ``start()`` ``port`` is the bound one."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, shutdown_grace: float = 5.0):
        self.app = app
        self.host = host
        self.port = port
        self._shutdown_grace = shutdown_grace
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the runtime server is already running")
        self._socket = self._listen()
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            log_config=None,  # no handlers of its own: its lines go out as the agent's (text or JSON)
            access_log=False,
            lifespan="on",  # the app's lifespan runs the worker of mirrored requests
            timeout_graceful_shutdown=self._shutdown_grace,
        )
        # uvicorn installs signal handlers only on the main thread, so the agent keeps its own.
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"runtime-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise Transient(reasons.RuntimeStartFailed, f"the runtime server on port {self.port} did not start")
            time.sleep(0.005)

    def _listen(self) -> socket.socket:
        """Bound here rather than by uvicorn, which calls sys.exit on a busy port. The protocol must
        be IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets, and without it Nagle's
        algorithm and delayed ACKs add 40 ms to every response sent in two writes."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(1024)
        except OSError as exc:
            sock.close()
            message = f"cannot listen on {self.host}:{self.port}: {exc.strerror}"
            raise NeedsOperator(reasons.ListenFailed, message) from None
        return sock

    def stop(self) -> None:
        """Stops accepting, lets in-flight requests finish (up to the grace period), joins the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> RuntimeServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
