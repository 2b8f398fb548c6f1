"""Tools for tests, benchmarks, the demo and the example-model script; not used by a running site."""

__all__ = ["audit_history", "demo", "fakes", "githttp", "natsserver", "nginxgit", "ociregistry", "onnx_builder", "processes", "schema_gen",
           "testing", "trust_fixtures"]
