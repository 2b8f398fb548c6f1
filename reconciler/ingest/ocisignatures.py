"""Signatures found in the registry beside the artifact (``signature: {format: registry, uri:
oci://…}``): cosign signs the *manifest* the URI resolves to, so the chain a site checks is
signature -> manifest digest -> (index ->) layer digest == the artifact's pinned digest.

Two forms, as cosign writes them and Flux reads them (bundles first, then the legacy tag):
- a Sigstore bundle (cosign v3) as an OCI 1.1 referrer of the manifest: found by the referrers API,
  else by the fallback tag ``sha256-<hex>`` (registries without the API, Debian's among them); its
  DSSE in-toto statement must name the manifest's digest;
- the legacy tag ``sha256-<hex>.sig``: simple-signing payloads whose ``docker-manifest-digest`` must
  be the manifest's, each signed (annotation ``dev.cosignproject.cosign/signature``) by a trusted
  key, or keyless: by the Fulcio certificate of annotation ``dev.sigstore.cosign/certificate``, with
  Rekor's signed entry timestamp in ``dev.sigstore.cosign/bundle``.
Each is checked by ``reconciler.trust`` against the site's roots exactly as a file's signature is.
Signatures are read through the registry's mirrors (``fetch.oci.mirrors``) as blobs are; a mirror
holding the model but no signature of it passes on to the next host."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

from reconciler import reasons
from reconciler.cancel import CancelToken
from reconciler.errors import ReconcilerError, Stalled
from reconciler.ingest.fetch import Deadline
from reconciler.ingest.oci import OCI_INDEX, parse_manifest, parse_reference
from reconciler.ingest.ocisource import Registry, site_arch, through_mirrors
from reconciler.manifests.models import Artifact
from reconciler.manifests.types import Digest
from reconciler.settings import FetchLimits
from reconciler.trust import TrustRoots, Verified, verify_artifact_signature, verify_payload_signature

T = TypeVar("T")
SIGNATURE_MAX_BYTES = 256 << 10
BUNDLE_TYPES = ("application/vnd.dev.sigstore.bundle.v0.3+json", "application/vnd.dev.sigstore.bundle+json")
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"
COSIGN_CERTIFICATE = "dev.sigstore.cosign/certificate"
COSIGN_REKOR_BUNDLE = "dev.sigstore.cosign/bundle"
REFERRER_PAGES = 20
_NEXT = re.compile(r'<([^>]+)>\s*;[^,]*\brel="?next"?')


def verify_registry_signature(artifact: Artifact, roots: TrustRoots, limits: FetchLimits,
                              stop: CancelToken | None = None) -> Verified:
    """Who signed the manifest holding the artifact, read from the first of the registry's mirrors
    that has a signature of it, else from the registry itself."""
    return _through_mirrors(artifact, limits, stop, lambda registry: _verify_at(registry, artifact, roots))


def registry_signature_count(artifact: Artifact, limits: FetchLimits, stop: CancelToken | None = None) -> int:
    """How many signatures of the artifact's manifest the registry (or a mirror) holds; none is refused."""
    return _through_mirrors(artifact, limits, stop, lambda registry: _count_at(registry, artifact))


def _through_mirrors(artifact: Artifact, limits: FetchLimits, stop: CancelToken | None, ask: Callable[[Registry], T]) -> T:
    uri = artifact.signature.uri
    if not uri.lower().startswith("oci://"):
        raise Stalled(reasons.ArtifactUriInvalid, f"{uri}: a signature found in the registry needs the oci:// URI of the signed manifest")
    ref = parse_reference(uri)
    # A mirror may hold the model and not (yet) its signatures: the next host is asked.
    return through_mirrors(uri, ref, limits, Deadline(limits.deadline, uri, stop), ask, frozenset({reasons.SignatureNotFound}))


def _verify_at(registry: Registry, artifact: Artifact, roots: TrustRoots) -> Verified:
    uri = artifact.signature.uri
    signed = _signed_manifest(registry, artifact)
    refusals: list[ReconcilerError] = []
    for bundle in _bundles(registry, signed):
        try:
            return verify_artifact_signature(signed.raw, "", bundle, "sigstore-bundle", roots)
        except Stalled as refused:
            refusals.append(refused)
    for signature in _simple_signatures(registry, signed):
        try:
            verified = verify_payload_signature(signature.payload, signature.signature, signature.certificate,
                                                signature.rekor_bundle, roots)
            _check_payload(uri, signature.payload, signed)
            return verified
        except Stalled as refused:
            refusals.append(refused)
    if refusals:
        raise refusals[0]
    raise _not_found(uri, registry.host, signed)


def _count_at(registry: Registry, artifact: Artifact) -> int:
    signed = _signed_manifest(registry, artifact)
    found = len(list(_bundles(registry, signed))) + len(list(_simple_signatures(registry, signed)))
    if not found:
        raise _not_found(artifact.signature.uri, registry.host, signed)
    return found


def _signed_manifest(registry: Registry, artifact: Artifact) -> Digest:
    """The digest of the signed manifest, once the artifact is proven a layer under it."""
    ref = parse_reference(artifact.signature.uri)
    arch = artifact.platform.arch if artifact.platform else None
    signed, _ = registry.resolve(ref, artifact.digest, site_arch(arch))
    return signed


def _not_found(uri: str, host: str, signed: Digest) -> Stalled:
    return Stalled(reasons.SignatureNotFound, f"{uri}: no signature of manifest {signed} at {host}: no Sigstore bundle "
                                        f"referrer (referrers API or tag sha256-{signed.hex}) and no tag sha256-{signed.hex}.sig")


def _bundles(registry: Registry, signed: Digest) -> Iterator[bytes]:
    for referrer in _referrers(registry, signed):
        if referrer.get("artifactType", "").split(";")[0] not in BUNDLE_TYPES:
            continue
        _, manifest = registry.manifest(referrer["digest"], referrer["digest"])
        subject = (manifest.get("subject") or {}).get("digest")
        if subject != signed:
            continue  # a fallback tag is written by clients: it may list what refers to something else
        for layer in manifest.get("layers") or []:
            if layer.get("mediaType", "").split(";")[0] in BUNDLE_TYPES:
                yield registry.small_blob(layer["digest"], SIGNATURE_MAX_BYTES)


def _referrers(registry: Registry, signed: Digest) -> list[dict[str, Any]]:
    """The referrers API's answer, page after page (``Link: <…>; rel="next"``), else (404, as
    distribution 2.8 answers) the fallback tag's index."""
    url: str | None = f"{registry.base}/referrers/{signed}"
    entries: list[Any] = []
    for page in range(REFERRER_PAGES):
        assert url is not None
        status, headers, body = registry.get(url, OCI_INDEX, SIGNATURE_MAX_BYTES)
        if status in (404, 400) and not page:
            _, index = registry.manifest(f"sha256-{signed.hex}", None, missing_ok=True)
            entries = index.get("manifests") or []
            break
        registry.refuse(status, f"the referrers of {signed}", headers)
        entries += parse_manifest(registry.uri, body, headers.get("content-type")).get("manifests") or []
        if (url := _next_page(url, headers.get("link"))) is None:
            break
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)]


def _next_page(url: str, link: str | None) -> str | None:
    """RFC 8288's ``rel="next"`` target, on the registry's own origin only."""
    match = _NEXT.search(link or "")
    if match is None:
        return None
    target = urljoin(url, match[1])
    return target if urlsplit(target).netloc == urlsplit(url).netloc else None


@dataclass(frozen=True)
class SimpleSignature:
    """One layer of a ``.sig`` manifest: the payload and what cosign annotated it with."""

    payload: bytes
    signature: bytes
    certificate: str | None
    rekor_bundle: str | None


def _simple_signatures(registry: Registry, signed: Digest) -> Iterator[SimpleSignature]:
    _, manifest = registry.manifest(f"sha256-{signed.hex}.sig", None, missing_ok=True)
    for layer in manifest.get("layers") or []:
        annotations = layer.get("annotations") or {}
        signature = annotations.get(COSIGN_SIGNATURE)
        if layer.get("mediaType") == SIMPLE_SIGNING and isinstance(signature, str):
            yield SimpleSignature(registry.small_blob(layer["digest"], SIGNATURE_MAX_BYTES), signature.encode(),
                                  _text(annotations.get(COSIGN_CERTIFICATE)), _text(annotations.get(COSIGN_REKOR_BUNDLE)))


def _text(annotation: object) -> str | None:
    """An annotation's value; absent, empty or not a string counts as absent (cosign writes ``""``
    for a certificate it does not have)."""
    return annotation if isinstance(annotation, str) and annotation else None


def _check_payload(uri: str, payload: bytes, signed: Digest) -> None:
    try:
        critical = json.loads(payload)["critical"]
        named = critical["image"]["docker-manifest-digest"]
        kind = critical["type"]
    except (ValueError, KeyError, TypeError):
        raise Stalled(reasons.SignatureMalformed, f"{uri}: a cosign signature whose payload is not a simple-signing document") from None
    if kind != "cosign container image signature":
        raise Stalled(reasons.SignatureMalformed, f"{uri}: a simple-signing payload of type {kind!r}")
    if named != signed:
        raise Stalled(reasons.SignatureManifestMismatch, f"{uri}: the cosign signature at sha256-{signed.hex}.sig signs "
                                                   f"manifest {named}, not {signed}")
