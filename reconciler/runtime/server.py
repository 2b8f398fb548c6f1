"""The site's inference server: Open Inference Protocol v2 REST over the registry's sessions, and
Prometheus metrics per deployment and version (which the in-site canary analysis also reads),
served by uvicorn from a background thread of the agent's own process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from reconciler import __version__
from reconciler.errors import Stalled, Transient
from reconciler.runtime import oip
from reconciler.runtime.registry import ModelRegistry, NotServed, Served

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

# --- metrics --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionStats:
    """Cumulative since the server started; an analysis window is the difference of two snapshots."""

    requests: int  # every answered inference request that reached this version
    errors: int  # the model failed (HTTP 500)
    invalid: int  # the request did not fit the model (HTTP 400)
    latency_buckets: tuple[tuple[float, int], ...]  # (upper bound s, successful requests at or below)


class RuntimeMetrics:
    """One set of metrics per app, in its own CollectorRegistry, so many apps can live in one process."""

    def __init__(self, registry: ModelRegistry):
        self.collectors = CollectorRegistry()
        self._requests = Counter(
            "reconciler_inference_requests",
            "Inference requests answered, by outcome (success, invalid, error).",
            ["deployment", "version", "outcome"],
            registry=self.collectors,
        )
        self._duration = Histogram(
            "reconciler_inference_request_duration_seconds",
            "Time to decode, run and encode a successful inference request.",
            ["deployment", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.collectors,
        )
        self.collectors.register(_ModelInfo(registry))

    def record(self, served: Served, outcome: str, seconds: float | None = None) -> None:
        self._requests.labels(served.deployment, served.version, outcome).inc()
        if seconds is not None:
            self._duration.labels(served.deployment, served.version).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.collectors)

    def snapshot(self) -> dict[tuple[str, str], VersionStats]:
        outcomes: dict[tuple[str, str], dict[str, int]] = {}
        for sample in self._requests.collect()[0].samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["deployment"], sample.labels["version"])
                outcomes.setdefault(key, {})[sample.labels["outcome"]] = int(sample.value)
        buckets: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for sample in self._duration.collect()[0].samples:
            if sample.name.endswith("_bucket"):
                key = (sample.labels["deployment"], sample.labels["version"])
                buckets.setdefault(key, []).append((float(sample.labels["le"]), int(sample.value)))
        return {
            key: VersionStats(
                requests=sum(counts.values()),
                errors=counts.get("error", 0),
                invalid=counts.get("invalid", 0),
                latency_buckets=tuple(buckets.get(key, ())),
            )
            for key, counts in outcomes.items()
        }


class _ModelInfo(Collector):
    """Read from the registry at scrape time, so it can never disagree with what is served."""

    def __init__(self, registry: ModelRegistry):
        self._registry = registry

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "reconciler_model_info",
            "Loaded model versions per deployment; state is active or previous.",
            labels=["deployment", "model", "version", "state"],
        )
        for deployment, loaded in sorted(self._registry.state().items()):
            for served, state in ((loaded.active, "active"), (loaded.previous, "previous")):
                if served is not None:
                    family.add_metric([deployment, served.model, served.version, state], 1)
        yield family


# --- the OIP v2 application ---------------------------------------------------------------------


def build_app(
    registry: ModelRegistry,
    *,
    site: str,
    metrics: RuntimeMetrics | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The app; ``app.state.metrics`` is its RuntimeMetrics. ``extra_routes`` mount other endpoints
    (OFREP flags) beside the inference API."""
    metrics = metrics or RuntimeMetrics(registry)
    api = _InferenceApi(registry, metrics, site)
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
    app = Starlette(routes=routes)
    app.state.metrics = metrics
    return app


class _InferenceApi:
    def __init__(self, registry: ModelRegistry, metrics: RuntimeMetrics, site: str):
        self._registry = registry
        self._metrics = metrics
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
            headers={"x-model-version": served.version},
        )

    async def model_ready(self, request: Request) -> Response:
        try:
            served = self._lookup(request)
        except NotServed as exc:
            return _error(404, str(exc))
        return JSONResponse({"name": served.deployment, "ready": True})

    async def infer(self, request: Request) -> Response:
        try:
            served = self._lookup(request)
        except NotServed as exc:
            return _error(404, str(exc))
        body = await request.body()
        started = time.perf_counter()
        try:
            content = await run_in_threadpool(_infer, served, body)
        except oip.RequestError as exc:
            self._metrics.record(served, "invalid")
            return _error(400, str(exc))
        except Exception as exc:  # onnxruntime's run errors share no narrower base class
            self._metrics.record(served, "error")
            return _error(500, f"model {served.deployment} version {served.version} failed: {exc}")
        self._metrics.record(served, "success", time.perf_counter() - started)
        return Response(content, media_type="application/json", headers={"x-model-version": served.version})

    async def metrics(self, request: Request) -> Response:
        return Response(self._metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def _lookup(self, request: Request) -> Served:
        return self._registry.get(request.path_params["name"], request.path_params.get("version"))


def _infer(served: Served, body: bytes) -> bytes:
    """Runs in a worker thread: decoding, the model and encoding all stay off the event loop."""
    request = oip.decode_request(body, served.interface)
    arrays = served.session.run(request.output_names, request.feeds)
    return oip.encode_response(
        served.deployment, served.version, request.id, dict(zip(request.output_names, arrays, strict=True))
    )


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


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
            access_log=False,
            lifespan="off",
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
                raise Transient("RuntimeStartFailed", f"the runtime server on port {self.port} did not start")
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
            raise Stalled("ListenFailed", message) from None
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
