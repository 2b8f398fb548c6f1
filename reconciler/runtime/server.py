"""The site's inference server: Open Inference Protocol v2 REST over the registry's sessions, routed
between stable and canary (routing.py), and Prometheus metrics per deployment and version (which
the in-site canary analysis also reads), served by uvicorn from a background thread of the agent's
own process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from reconciler import __version__, reasons
from reconciler.errors import NeedsOperator, Transient
from reconciler.runtime import oip
from reconciler.runtime.metrics import RuntimeMetrics
from reconciler.runtime.registry import ModelRegistry, NotServed, Served
from reconciler.runtime.routing import Router, ShadowRunner

ROUTING_KEY_HEADER = "x-routing-key"
VERSION_HEADER = "x-model-version"

# --- the OIP v2 application ---------------------------------------------------------------------


def build_app(
    registry: ModelRegistry,
    *,
    site: str,
    metrics: RuntimeMetrics | None = None,
    router: Router | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The app; ``app.state.metrics`` is its RuntimeMetrics and ``app.state.shadow`` the runner of
    mirrored requests, which runs while the app is served. ``router`` decides which version answers
    (a seeded one makes weighted routing repeatable); ``extra_routes`` mount other endpoints (OFREP
    flags) beside the inference API."""
    metrics = metrics or RuntimeMetrics(registry)
    shadow = ShadowRunner(metrics.record_shadow, metrics.record_shadow_dropped)
    api = _InferenceApi(registry, router or Router(registry), metrics, shadow, site)
    routes = [
        Route("/v2", api.server_metadata),
        Route("/v2/health/live", api.live),
        Route("/v2/health/ready", api.ready),
        Route("/v2/models/{name}", api.model_metadata),
        Route("/v2/models/{name}/versions/{version}", api.model_metadata),
        Route("/v2/models/{name}/ready", api.model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", api.model_ready),
        Route("/v2/models/{name}/infer", api.infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", api.infer, methods=["POST"]),
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

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.metrics = metrics
    app.state.shadow = shadow
    return app


@dataclass(frozen=True)
class _Answer:
    served: Served
    outcome: str  # success (content is the response body), invalid or error (content is the message)
    content: bytes | str


_STATUS = {"success": 200, "invalid": 400, "error": 500}


class _InferenceApi:
    def __init__(
        self, registry: ModelRegistry, router: Router, metrics: RuntimeMetrics, shadow: ShadowRunner, site: str
    ):
        self._registry = registry
        self._router = router
        self._metrics = metrics
        self._shadow = shadow
        self._site = site

    async def server_metadata(self, request: Request) -> Response:
        metadata = {"name": "reconciler", "version": __version__, "extensions": [], "site": self._site}
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

    async def infer(self, request: Request) -> Response:
        body = await request.body()
        name, pinned = request.path_params["name"], request.path_params.get("version")
        key = request.headers.get(ROUTING_KEY_HEADER)
        started = time.perf_counter()
        try:
            answer = await run_in_threadpool(self._answer, name, pinned, key, body)
        except NotServed as exc:
            return _error(404, str(exc))
        headers = {VERSION_HEADER: answer.served.version}
        if answer.outcome != "success":
            self._metrics.record(answer.served, answer.outcome)
            return _error(_STATUS[answer.outcome], str(answer.content), headers)
        self._metrics.record(answer.served, "success", time.perf_counter() - started)
        return Response(answer.content, media_type="application/json", headers=headers)

    def _answer(self, name: str, pinned: str | None, header_key: str | None, body: bytes) -> _Answer:
        """Runs in a worker thread: decoding, routing, the model and encoding all stay off the
        event loop. A body too broken to read a routing key from is still charged to the version
        the rest of the request routes to."""
        try:
            document = oip.parse_document(body)
        except oip.RequestError as exc:
            return _Answer(self._router.route(name, pinned=pinned, key=header_key).served, "invalid", str(exc))
        decision = self._router.route(name, pinned=pinned, key=header_key or oip.routing_key(document))
        served = decision.served
        try:
            request = oip.decode_document(document, served.interface)
        except oip.RequestError as exc:
            return _Answer(served, "invalid", str(exc))
        try:
            arrays = served.session.run(request.output_names, request.feeds)
            content = oip.encode_response(
                served.deployment, served.version, request.id, dict(zip(request.output_names, arrays, strict=True))
            )
        except Exception as exc:  # onnxruntime's run errors share no narrower base class
            return _Answer(served, "error", f"model {served.deployment} version {served.version} failed: {exc}")
        if decision.shadow is not None:
            self._shadow.submit(decision.shadow, request.feeds, request.output_names, arrays)
        return _Answer(served, "success", content)

    async def metrics(self, request: Request) -> Response:
        return Response(self._metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def _lookup(self, request: Request) -> Served:
        return self._registry.get(request.path_params["name"], request.path_params.get("version"))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


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
