"""Artifact signatures: who vouches for the bytes whose digest the manifest pins.

``verify_artifact_signature`` takes the digest computed while the artifact streamed in (the blob
is never read twice), the signature file, the manifest's ``signature.format`` (or None: detected
from the content) and the site's trust roots, and returns who vouched or raises Stalled:
- ``cosign``: a cosign key signature (``keys.py``);
- ``sigstore-bundle`` / ``model-signing``: a Sigstore bundle signed with a trusted key, by message
  signature or DSSE in-toto statement (``bundles.py``), or keyless, by a certificate of a trusted
  identity, verified offline with the ``sigstore`` library (``keyless.py``).

``verify_payload_signature`` checks a cosign signature of a document rather than of an artifact
(the simple-signing payloads of cosign's legacy ``.sig`` tag): by a trusted key, or keyless by a
certificate with Rekor's signed entry timestamp (``keylesssig.py``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.manifests.models import SignatureFormat
from reconciler.trust.bundles import parse_bundle, verify_key_bundle
from reconciler.trust.keys import (
    TrustedKey,
    generate_private_key,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    require_sha256,
    sign_digest,
    verify_cosign,
)
from reconciler.trust.roots import KeylessIdentity, TrustRoots, Verified, narrow

__all__ = [
    "KeylessIdentity", "TrustRoots", "TrustedKey", "Verified", "detect_format", "generate_private_key",
    "load_private_key", "load_public_key", "narrow", "private_key_pem", "public_key_pem", "sign_digest",
    "verify_artifact_signature", "verify_cosign", "verify_payload_signature", "verify_signature",
    # Modules: the commit signature policy, and `reconciler sign` with its key handling.
    "commitpolicy", "signing",
]


def verify_artifact_signature(sha256_digest: bytes, file_name: str, signature_file: bytes,
                              signature_format: SignatureFormat | None, roots: TrustRoots) -> Verified:
    """Who vouches for the artifact ``file_name`` whose SHA-256 is ``sha256_digest``.

    ``file_name`` is the artifact's name as a model_signing manifest lists it (the last segment of
    its URI); other formats bind the digest alone."""
    require_sha256(sha256_digest)
    if (signature_format or _shape(signature_file)) == "cosign":
        return Verified("cosign", key=verify_cosign(sha256_digest, signature_file, roots.keys))
    bundle = parse_bundle(signature_file)
    if signature_format == "model-signing" and bundle.dsse_envelope is None:
        raise Stalled(reasons.SignatureFormatUnsupported,
                      "the manifest declares a model-signing bundle, but the bundle holds no DSSE statement")
    if bundle.keyless:
        # Importing sigstore takes ~0.4 s; only keyless bundles need it, so `reconciler sign` does not pay.
        from reconciler.trust.keyless import verify_keyless

        identity = verify_keyless(sha256_digest, file_name, signature_file, bundle, signature_format,
                                  roots.identities, roots.sigstore_trusted_root)
        return Verified(bundle.format, identity=identity)
    key = verify_key_bundle(sha256_digest, file_name, bundle, signature_format, roots.keys)
    return Verified(bundle.format, key=key)


def verify_payload_signature(payload: bytes, signature_b64: bytes, certificate_pem: str | None, rekor_bundle: str | None,
                             roots: TrustRoots) -> Verified:
    """Who signed ``payload`` with cosign: a trusted key when no certificate comes with the
    signature, else a trusted identity whose certificate the log recorded (``rekor_bundle``)."""
    if certificate_pem is None:
        return Verified("cosign", key=verify_cosign(hashlib.sha256(payload).digest(), signature_b64, roots.keys))
    from reconciler.trust.keylesssig import verify_keyless_sig  # sigstore's import cost, as above

    identity = verify_keyless_sig(payload, signature_b64, certificate_pem, rekor_bundle, roots.identities,
                                  roots.sigstore_trusted_root)
    return Verified("cosign", identity=identity)


def detect_format(signature_file: bytes) -> SignatureFormat:
    """Bundles are JSON: a DSSE statement with the model_signing predicate is ``model-signing``,
    any other JSON ``sigstore-bundle``; anything else is a cosign ``.sig`` (base64 text)."""
    if _shape(signature_file) == "cosign":
        return "cosign"
    try:
        return parse_bundle(signature_file).format
    except Stalled:
        return "sigstore-bundle"  # verification says what is wrong with it


def verify_signature(sha256_digest: bytes, signature_file: bytes, signature_format: SignatureFormat | None,
                     keys: Sequence[TrustedKey]) -> TrustedKey:
    """The first API, kept for its callers: key signatures only, no file name (no model_signing)."""
    verified = verify_artifact_signature(sha256_digest, "", signature_file, signature_format, TrustRoots(keys=tuple(keys)))
    assert verified.key is not None  # with no identities, only a key can vouch
    return verified.key


def _shape(signature_file: bytes) -> SignatureFormat:
    return "sigstore-bundle" if signature_file.lstrip().startswith(b"{") else "cosign"
