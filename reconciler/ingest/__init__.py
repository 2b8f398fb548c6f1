"""Bringing artifacts in: fetching over HTTP (through a proxy, with progress) or from OCI registries,
the blob store, and verifying what arrived against the manifests and the trust roots; publishing a
model to a registry (``ocipush``)."""

__all__ = ["artifacts", "fetch", "oci", "ocipush", "verification"]
