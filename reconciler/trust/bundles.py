"""Sigstore bundles (protobuf-specs ``Bundle`` JSON) signed with a key the site trusts.

Two contents are accepted:
- ``messageSignature`` (``cosign sign-blob --key --bundle``): ECDSA over the blob's SHA-256, with
  ``messageDigest`` naming that digest. The signature is what binds the bytes; the digest field
  only makes "this bundle is for another artifact" a clear error.
- ``dsseEnvelope`` with an in-toto Statement (``cosign attest-blob --key``, OpenSSF
  ``model_signing`` with a private key): ECDSA over the DSSE PAE, and the statement must cover the
  artifact — as a subject digest, or for model_signing as the resource of the artifact's file name.

Transparency-log entries in key bundles are not checked: the key alone proves who signed, and
checking an entry offline would need the log's key, which key-signing users do not configure
(cosign's ``verify-blob --key`` without a log). Bundles carrying a certificate are keyless and
handled by ``keyless.py``."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.manifests.models import SignatureFormat
from reconciler.trust.keys import (
    ECDSA_PREHASHED_SHA256,
    TrustedKey,
    decode_der_signature,
    describe_keys,
    first_verifying_key,
)

BUNDLE_MEDIA_TYPES = frozenset({
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
})
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT_TYPES = frozenset({"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"})
MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0"
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_LISTED_NAMES_SHOWN = 5


@dataclass(frozen=True)
class Bundle:
    """The parts of a bundle we verify; exactly one of ``message_signature`` / ``dsse_envelope``."""

    material: dict[str, Any]
    message_signature: dict[str, Any] | None
    dsse_envelope: dict[str, Any] | None

    @property
    def keyless(self) -> bool:
        return "certificate" in self.material or "x509CertificateChain" in self.material

    @property
    def format(self) -> SignatureFormat:
        if self.dsse_envelope is not None and _predicate_type(self.dsse_envelope) == MODEL_SIGNING_PREDICATE:
            return "model-signing"
        return "sigstore-bundle"


def parse_bundle(signature_file: bytes) -> Bundle:
    try:
        document = json.loads(signature_file)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Stalled(reasons.SignatureMalformed, f"the signature bundle is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise Stalled(reasons.SignatureMalformed, "the signature bundle is not a JSON object")
    media_type = document.get("mediaType")
    if not isinstance(media_type, str) or media_type not in BUNDLE_MEDIA_TYPES:
        raise Stalled(reasons.SignatureFormatUnsupported,
                      f"the signature is not a Sigstore bundle of a known version: mediaType {media_type!r}; "
                      f"known: {', '.join(sorted(BUNDLE_MEDIA_TYPES))}")
    material = _object(document, "verificationMaterial", "the bundle")
    message, envelope = document.get("messageSignature"), document.get("dsseEnvelope")
    if (message is None) == (envelope is None):
        raise Stalled(reasons.SignatureMalformed, "the bundle must hold exactly one of messageSignature and dsseEnvelope")
    return Bundle(material,
                  _object(document, "messageSignature", "the bundle") if message is not None else None,
                  _object(document, "dsseEnvelope", "the bundle") if envelope is not None else None)


def verify_key_bundle(sha256_digest: bytes, file_name: str, bundle: Bundle, declared: SignatureFormat | None,
                      keys: tuple[TrustedKey, ...]) -> TrustedKey:
    """The trusted key that signed ``bundle``, after checking the bundle covers the artifact."""
    if "publicKey" not in bundle.material:
        raise Stalled(reasons.SignatureMalformed,
                      "the bundle's verificationMaterial holds neither a publicKey nor a certificate")
    if not keys:
        raise Stalled(reasons.NoTrustedKeys, "the bundle is signed with a key, and the site trusts no keys")
    candidates = _hinted(keys, _object(bundle.material, "publicKey", "verificationMaterial").get("hint"))
    if bundle.message_signature is not None:
        check_message_digest(bundle.message_signature, sha256_digest)
        der = decode_der_signature(_text(bundle.message_signature, "signature", "messageSignature"),
                                   "the bundle's messageSignature.signature")
        key = first_verifying_key(candidates, der, sha256_digest, ECDSA_PREHASHED_SHA256)
    else:
        assert bundle.dsse_envelope is not None
        key = _verify_dsse_with_keys(bundle.dsse_envelope, candidates)
    if key is None:
        raise Stalled(reasons.SignatureInvalid,
                      f"the bundle's signature verifies under none of the trusted keys; tried keys: {describe_keys(candidates)}")
    if bundle.dsse_envelope is not None:  # what the statement says counts only once its signature holds
        check_statement(*envelope_payload(bundle.dsse_envelope), sha256_digest, file_name, declared)
    return key


def check_message_digest(message_signature: dict[str, Any], sha256_digest: bytes) -> None:
    """``messageDigest`` (optional in the spec; cosign always writes it) must name our bytes."""
    digest = message_signature.get("messageDigest")
    if digest is None:
        return
    if not isinstance(digest, dict):
        raise Stalled(reasons.SignatureMalformed, "the bundle's messageDigest is not an object")
    algorithm = digest.get("algorithm")
    if algorithm != "SHA2_256":
        raise Stalled(reasons.SignatureFormatUnsupported, f"the bundle's messageDigest uses {algorithm!r}; only SHA2_256 is supported")
    claimed = _base64(_text(digest, "digest", "messageDigest"), "messageDigest.digest")
    if claimed != sha256_digest:
        raise Stalled(reasons.BundleDigestMismatch,
                      f"the bundle signs sha256:{claimed.hex()}, not this artifact (sha256:{sha256_digest.hex()})")


def envelope_payload(envelope: dict[str, Any]) -> tuple[str, bytes]:
    payload_type = _text(envelope, "payloadType", "dsseEnvelope")
    return payload_type, _base64(_text(envelope, "payload", "dsseEnvelope"), "dsseEnvelope.payload")


def check_statement(payload_type: str, payload: bytes, sha256_digest: bytes, file_name: str,
                    declared: SignatureFormat | None) -> None:
    """The signed in-toto statement must cover the artifact (its digest, and for model_signing
    its file name)."""
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise Stalled(reasons.SignatureFormatUnsupported,
                      f"the DSSE payloadType is {payload_type!r}; only {IN_TOTO_PAYLOAD_TYPE} statements are supported")
    statement = _statement(payload)
    predicate_type = statement.get("predicateType")
    if predicate_type == MODEL_SIGNING_PREDICATE:
        _check_model_signing_resources(statement, sha256_digest, file_name)
    elif declared == "model-signing":
        raise Stalled(reasons.SignatureFormatUnsupported,
                      f"the manifest declares a model-signing bundle, but its statement's predicateType is {predicate_type!r}")
    else:
        _check_subjects(statement, sha256_digest, file_name)


def _verify_dsse_with_keys(envelope: dict[str, Any], keys: tuple[TrustedKey, ...]) -> TrustedKey | None:
    payload_type, payload = envelope_payload(envelope)
    signed = pae(payload_type, payload)
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise Stalled(reasons.SignatureMalformed, "the DSSE envelope has no signatures")
    for signature in signatures:
        if not isinstance(signature, dict):
            raise Stalled(reasons.SignatureMalformed, "a DSSE signature is not an object")
        der = decode_der_signature(_text(signature, "sig", "a DSSE signature"), "a DSSE signature")
        key = first_verifying_key(keys, der, signed, _ECDSA_SHA256)
        if key is not None:
            return key
    return None


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding: what a DSSE signature signs."""
    encoded_type = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(encoded_type), encoded_type, len(payload), payload)


def _hinted(keys: tuple[TrustedKey, ...], hint: object) -> tuple[TrustedKey, ...]:
    """The key the unauthenticated hint names, if it names one; otherwise every trusted key."""
    named = tuple(key for key in keys if isinstance(hint, str) and hint in key.hints)
    return named or keys


def _statement(payload: bytes) -> dict[str, Any]:
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Stalled(reasons.SignatureMalformed, f"the DSSE payload is not JSON ({exc})") from None
    if not isinstance(statement, dict) or not isinstance(statement.get("_type"), str) \
            or statement["_type"] not in IN_TOTO_STATEMENT_TYPES:
        raise Stalled(reasons.SignatureMalformed, "the DSSE payload is not an in-toto Statement")
    return statement


def _check_model_signing_resources(statement: dict[str, Any], sha256_digest: bytes, file_name: str) -> None:
    predicate = _object(statement, "predicate", "the model_signing statement")
    resources = predicate.get("resources")
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        raise Stalled(reasons.SignatureMalformed, "the model_signing statement's predicate.resources is not a list of objects")
    resource = next((r for r in resources if r.get("name") == file_name), None)
    if resource is None:
        listed = [str(r.get("name")) for r in resources]
        raise Stalled(reasons.StatementMissingFile, f"DSSE statement does not list {file_name}; it lists {_some(listed)}")
    if resource.get("algorithm") != "sha256":
        raise Stalled(reasons.SignatureFormatUnsupported,
                      f"the model_signing statement hashes {file_name} with {resource.get('algorithm')!r}; "
                      "only sha256 manifests can be checked against the artifact's digest")
    if resource.get("digest") != sha256_digest.hex():
        raise Stalled(reasons.BundleDigestMismatch,
                      f"the model_signing statement lists {file_name} as sha256:{resource.get('digest')}, "
                      f"not this artifact (sha256:{sha256_digest.hex()})")


def _check_subjects(statement: dict[str, Any], sha256_digest: bytes, file_name: str) -> None:
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not all(isinstance(s, dict) for s in subjects):
        raise Stalled(reasons.SignatureMalformed, "the in-toto statement's subject is not a list of objects")
    digests = [s.get("digest") if isinstance(s.get("digest"), dict) else {} for s in subjects]
    if any(d.get("sha256") == sha256_digest.hex() for d in digests):
        return
    named = [d.get("sha256") for s, d in zip(subjects, digests, strict=True) if s.get("name") == file_name]
    if named:
        raise Stalled(reasons.BundleDigestMismatch,
                      f"the DSSE statement lists {file_name} as sha256:{named[0]}, not this artifact (sha256:{sha256_digest.hex()})")
    listed = [f"{s.get('name')} (sha256:{d.get('sha256')})" for s, d in zip(subjects, digests, strict=True)]
    raise Stalled(reasons.StatementMissingFile,
                  f"DSSE statement does not list {file_name} (sha256:{sha256_digest.hex()}); it lists {_some(listed)}")


def _predicate_type(envelope: dict[str, Any]) -> object:
    """The statement's predicateType, or None when the envelope does not hold a readable statement
    (verification then reports what is wrong with it)."""
    try:
        statement = json.loads(base64.b64decode(envelope.get("payload", ""), validate=True))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        return None
    return statement.get("predicateType") if isinstance(statement, dict) else None


def _some(names: list[str]) -> str:
    if not names:
        return "nothing"
    shown = ", ".join(names[:_LISTED_NAMES_SHOWN])
    return shown if len(names) <= _LISTED_NAMES_SHOWN else f"{shown} and {len(names) - _LISTED_NAMES_SHOWN} more"


def _object(document: dict[str, Any], field: str, where: str) -> dict[str, Any]:
    value = document.get(field)
    if not isinstance(value, dict):
        raise Stalled(reasons.SignatureMalformed, f"{where} has no {field} object")
    return value


def _text(document: dict[str, Any], field: str, where: str) -> str:
    value = document.get(field)
    if not isinstance(value, str):
        raise Stalled(reasons.SignatureMalformed, f"{where} has no {field} string")
    return value


def _base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Stalled(reasons.SignatureMalformed, f"the bundle's {what} is not base64") from None
