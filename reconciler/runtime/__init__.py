"""The site's inference runtime: onnxruntime sessions behind Open Inference Protocol v2 REST."""

__all__ = ["drift_counter", "hooks", "metrics", "ofrep", "registry", "routing", "server", "validate_child", "validation"]
