"""Tools for tests, benchmarks, the demo and the example-model script; not used by a running site."""

__all__ = ["demo", "fakes", "githttp", "ociregistry", "onnx_builder", "processes", "schema_gen"]
