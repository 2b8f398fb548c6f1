"""Signatures laid out in a registry exactly as cosign writes them (sigstore/cosign v3.1
``specs/SIGNATURE_SPEC.md``, ``specs/BUNDLE_SPEC.md``, ``pkg/oci/remote/write.go``):

- ``cosign sign --key`` (v2, or v3 with ``--new-bundle-format=false``): the tag ``sha256-<hex>.sig``,
  one layer per signature holding the simple-signing payload, the base64 ECDSA signature of that
  payload in the layer annotation ``dev.cosignproject.cosign/signature``; keyless (``cosign sign``
  with a Fulcio certificate) adds the certificate, its chain and the Rekor bundle as annotations;
- ``cosign sign`` v3: a Sigstore bundle v0.3 (DSSE in-toto statement, predicate
  ``https://sigstore.dev/cosign/sign/v1``, subject = the manifest's digest) as an OCI 1.1 referrer,
  pushed by digest; without a referrers API, go-containerregistry also writes the fallback tag
  ``sha256-<hex>``, an index listing the referrer.

``push`` is the registry's: (blob bytes) -> descriptor, and (reference, manifest, media type) -> digest."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler.devtools.trust_fixtures import LocalSigstore, dsse_bundle

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
         "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}

PutBlob = Callable[[bytes], dict]
PutManifest = Callable[[str | None, dict, str], str]


def simple_signing_payload(reference: str, manifest_digest: str) -> bytes:
    return json.dumps({"critical": {"identity": {"docker-reference": reference},
                                    "image": {"docker-manifest-digest": manifest_digest},
                                    "type": "cosign container image signature"},
                       "optional": None}).encode()


def sign_legacy(put_blob: PutBlob, put_manifest: PutManifest, signer: ec.EllipticCurvePrivateKey | LocalSigstore,
                reference: str, signed: str, payload_digest: str | None = None,
                annotations: dict[str, str] | None = None) -> str:
    """``cosign sign --key`` (or keyless, by a ``LocalSigstore`` certificate) with the tag scheme;
    ``payload_digest`` (default ``signed``) is what the payload says it signs; ``annotations``
    replace some of those cosign wrote."""
    payload = simple_signing_payload(reference, payload_digest or signed)
    if isinstance(signer, LocalSigstore):
        written = signer.sign_cosign_payload(payload)
    else:
        written = {"dev.cosignproject.cosign/signature": base64.b64encode(signer.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()}
    layer = put_blob(payload) | {"mediaType": SIMPLE_SIGNING, "annotations": written | (annotations or {})}
    config = json.dumps({"architecture": "", "created": "0001-01-01T00:00:00Z",
                         "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
                         "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}, "config": {}}).encode()
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": put_blob(config) | {"mediaType": "application/vnd.oci.image.config.v1+json"},
                "layers": [layer]}
    return put_manifest(f"sha256-{signed.removeprefix('sha256:')}.sig", manifest, OCI_MANIFEST)


def cosign_statement(reference: str, signed: str) -> dict[str, Any]:
    return {"_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": reference, "digest": {"sha256": signed.removeprefix("sha256:")}}],
            "predicateType": "https://sigstore.dev/cosign/sign/v1", "predicate": {}}


def attach_bundle(put_blob: PutBlob, put_manifest: PutManifest, bundle: dict[str, Any], signed: str,
                  signed_size: int, fallback_tag: bool) -> str:
    """A bundle as cosign v3 attaches it: a referrer of ``signed``, and the fallback tag if asked."""
    put_blob(b"{}")
    layer = put_blob(json.dumps(bundle).encode()) | {"mediaType": BUNDLE}
    annotations = {"dev.sigstore.bundle.content": "dsse-envelope",
                   "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
                   "org.opencontainers.image.created": "2026-12-07T05:00:00Z"}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE, "config": EMPTY,
                "layers": [layer], "subject": {"mediaType": OCI_MANIFEST, "digest": signed, "size": signed_size},
                "annotations": annotations}
    body = json.dumps(manifest, separators=(",", ":")).encode()
    digest = put_manifest(None, manifest, OCI_MANIFEST)
    if fallback_tag:
        put_manifest(f"sha256-{signed.removeprefix('sha256:')}", {
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
                           "artifactType": BUNDLE, "annotations": annotations}]}, OCI_INDEX)
    return digest


def key_bundle(key: ec.EllipticCurvePrivateKey, reference: str, signed: str) -> dict[str, Any]:
    return dsse_bundle(key, cosign_statement(reference, signed))
