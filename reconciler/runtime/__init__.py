"""The site's inference runtime: onnxruntime sessions behind Open Inference Protocol v2, over REST
and gRPC."""

__all__ = [
    "drift_counter", "evaluation",
    "grpc_codec",
    "grpc_server",
    "hooks",
    "metrics",
    "ofrep",
    "providers",
    "registry",
    "routing",
    "server",
    "validate_child",
    "validation",
]
