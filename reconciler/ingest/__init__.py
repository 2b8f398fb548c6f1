"""Bringing artifacts in: fetching over HTTP (through a proxy, with progress), the blob store, and
verifying what arrived against the manifests and the trust roots."""

__all__ = ["artifacts", "fetch", "verification"]
