"""Bringing artifacts in: fetching over HTTP (through a proxy, with progress) or from OCI registries,
the blob store, and verifying what arrived against the manifests and the trust roots; publishing a
model to a registry (``ocipush``); the head beacon's conditional GET (``beacon``)."""

__all__ = ["artifacts", "beacon", "fetch", "oci", "ocipush", "verification"]
