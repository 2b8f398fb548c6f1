"""The fleet-repo language: models (models.py, types.py), loading (loader.py: a tree of files,
documents.py: one file, yamlreader.py: YAML as Kubernetes tools read it) with findings that point
at the line (findings.py), cross-document checks (semantics.py), label selectors and the generated
JSON Schemas.

Nothing is re-exported here: reconciler.flags imports manifests.types, so importing the loader from
this package's __init__ would make that import circular. ``__all__`` lists the public modules."""

__all__ = ["batch", "deployments", "evaluation", "findings", "fleet", "loader", "models", "selectors", "semantics", "types", "yamlreader"]
