"""The fleet-repo language: models (models.py, types.py), loading with precise findings
(loader.py), cross-document checks (semantics.py), label selectors and the generated JSON Schemas.

Nothing is re-exported here: reconciler.flags imports manifests.types, so importing the loader from
this package's __init__ would make that import circular. ``__all__`` lists the public modules."""

__all__ = ["batch", "fleet", "loader", "models", "selectors", "semantics", "types"]
