"""The site's inference server over gRPC: the Open Inference Protocol's GRPCInferenceService (health,
metadata and ModelInfer) beside the REST one, sharing its request path (inference.py: registry,
routing with canary split and shadow traffic, dynamic batching, metrics, counted with
protocol="grpc"). grpcio serves it from threads of its own in the agent's process; ``stop`` lets
calls in flight finish and leaves no thread behind."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn

import grpc
from google.protobuf.message import Message

from reconciler import __version__, reasons
from reconciler.errors import NeedsOperator
from reconciler.runtime import grpc_codec, oip
from reconciler.runtime.inference import INVALID, SUCCESS, Answer, Inference
from reconciler.runtime.registry import ModelRegistry, NotLoadedYet, NotServed

ROUTING_KEY_METADATA = "x-routing-key"  # as REST's header; wins over parameters.routing_key
MAX_MESSAGE_BYTES = 64 * 1024**2  # a request or response beyond it is refused with RESOURCE_EXHAUSTED
_FAILED = {INVALID: grpc.StatusCode.INVALID_ARGUMENT}  # else the model's failure: INTERNAL


class InferenceService:
    """The RPCs, named as the proto names them (so the handler is found from the descriptor); each
    takes the request message and grpc's context."""

    def __init__(self, registry: ModelRegistry, inference: Inference):
        self._registry = registry
        self._inference = inference
        self._message = grpc_codec.message_class

    def ServerLive(self, request: Message, context: grpc.ServicerContext) -> Message:
        return self._message("ServerLiveResponse")(live=True)

    def ServerReady(self, request: Message, context: grpc.ServicerContext) -> Message:
        return self._message("ServerReadyResponse")(ready=self._registry.ready())

    def ServerMetadata(self, request: Message, context: grpc.ServicerContext) -> Message:
        return self._message("ServerMetadataResponse")(name="reconciler", version=__version__, extensions=[])

    def ModelReady(self, request: Message, context: grpc.ServicerContext) -> Message:
        """Not ready while the agent is still loading a deployment it expects; unknown: NOT_FOUND."""
        try:
            self._registry.get(request.name, request.version or None)
        except NotLoadedYet:
            return self._message("ModelReadyResponse")(ready=False)
        except NotServed as exc:
            _abort(context, exc)
        return self._message("ModelReadyResponse")(ready=True)

    def ModelMetadata(self, request: Message, context: grpc.ServicerContext) -> Message:
        try:
            served = self._registry.get(request.name, request.version or None)
        except NotServed as exc:
            _abort(context, exc)
        loaded = self._registry.state().get(served.deployment)
        return self._message("ModelMetadataResponse")(
            name=served.deployment,
            versions=[s.version for s in loaded.versions()] if loaded else [served.version],
            platform="onnxruntime",
            inputs=[oip.tensor_metadata(spec) for spec in served.interface.inputs],
            outputs=[oip.tensor_metadata(spec) for spec in served.interface.outputs],
        )

    def ModelInfer(self, request: Message, context: grpc.ServicerContext) -> Message:
        started = time.perf_counter()
        key = dict(context.invocation_metadata()).get(ROUTING_KEY_METADATA)
        try:
            answer, response = self._answer(request, key, started)
        except NotServed as exc:
            _abort(context, exc)
        self._inference.record(answer, protocol="grpc")
        if response is None:
            context.abort(_FAILED.get(answer.outcome, grpc.StatusCode.INTERNAL), answer.message)
        return response

    def _answer(self, request: Message, header_key: str | None, started: float) -> tuple[Answer, Message | None]:
        """The answer, and the response when it succeeded. A routing key of the wrong type is still
        charged to the version the rest of the request routes to."""
        name, pinned = request.model_name, request.model_version or None
        try:
            key = header_key or grpc_codec.routing_key(request)
        except oip.RequestError as exc:
            return self._inference.refuse(name, str(exc), pinned=pinned, key=header_key), None
        answer = self._inference.infer(
            name, lambda interface: grpc_codec.decode_request(request, interface), pinned=pinned, key=key, started=started
        )
        if answer.outcome != SUCCESS or answer.request is None:
            return answer, None
        served, request_id = answer.served, answer.request.id
        try:
            return answer, grpc_codec.encode_response(served.deployment, served.version, request_id, answer.outputs)
        except TypeError as exc:  # an output of a type the protocol has no datatype for
            return answer.failure(exc), None


def _abort(context: grpc.ServicerContext, exc: NotServed) -> NoReturn:
    """UNAVAILABLE for a deployment still loading (retry), NOT_FOUND for one not served here."""
    code = grpc.StatusCode.UNAVAILABLE if isinstance(exc, NotLoadedYet) else grpc.StatusCode.NOT_FOUND
    context.abort(code, str(exc))
    raise AssertionError("grpc's abort returns only by raising")  # pragma: no cover


def service_handler(service: InferenceService) -> grpc.GenericRpcHandler:
    """The proto's service, method by method, bound to ``service``; built from the descriptor."""
    methods: dict[str, grpc.RpcMethodHandler] = {}
    for method in grpc_codec.SERVICE.methods:
        reply = grpc_codec.message_class(method.output_type.name)
        handler: Callable[[Message, grpc.ServicerContext], Message] = getattr(service, method.name)
        methods[method.name] = grpc.unary_unary_rpc_method_handler(
            handler,
            request_deserializer=grpc_codec.message_class(method.input_type.name).FromString,
            response_serializer=reply.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(grpc_codec.SERVICE_NAME, methods)


class GrpcServer:
    """The service on ``host:port`` (0: an ephemeral port; after ``start()`` ``port`` is the bound
    one), answering through ``inference``, the REST app's (``app.state.inference``): one request
    path, one shadow runner and one batch queue per version, whichever protocol a request came by."""

    def __init__(
        self,
        registry: ModelRegistry,
        inference: Inference,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        workers: int = 8,
        shutdown_grace: float = 5.0,
    ):
        self.host, self.port = host, port
        self._service = InferenceService(registry, inference)
        self._workers = workers
        self._shutdown_grace = shutdown_grace
        self._server: grpc.Server | None = None
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the gRPC server is already running")
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="runtime-grpc")
        self._server = grpc.server(
            self._executor,
            handlers=[service_handler(self._service)],
            options=[
                ("grpc.so_reuseport", 0),  # a port another server holds is an error, not shared
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            bound = self._server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if bound == 0:
            self.stop()
            raise NeedsOperator(reasons.ListenFailed, f"cannot listen for gRPC on {address}: in use or not an address of this host")
        self.port = bound
        self._server.start()

    def stop(self) -> None:
        """Stops accepting, lets calls in flight finish (up to the grace period), then joins the
        worker threads."""
        if self._server is not None:
            self._server.stop(self._shutdown_grace).wait()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._server = self._executor = None

    def __enter__(self) -> GrpcServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
