"""Keyless cosign signatures of the legacy tag scheme (``cosign sign`` v1/v2, or v3 with
``--new-bundle-format=false``, without a key): a simple-signing payload signed by a short-lived
Fulcio certificate, which cosign writes into the layer annotations of ``sha256-<hex>.sig``
beside the signature: ``dev.sigstore.cosign/certificate`` (PEM), ``dev.sigstore.cosign/chain``
(PEM intermediates) and ``dev.sigstore.cosign/bundle``, Rekor's signed entry timestamp (SET)
over the entry ``{"SignedEntryTimestamp": b64, "Payload": {"body": b64, "integratedTime",
"logIndex", "logID": hex}}``.

Checked as keyless bundles are (``keyless.py``): the same trusted identities and issuer policy,
the same trusted root and the ``sigstore`` library's own pieces, in its verifier's order. The
one difference is why this is not a call of ``Verifier.verify_artifact``: the annotation carries
the log's inclusion *promise* (the SET) but no inclusion proof, which sigstore-python (since 3.0)
requires of every bundle, while cosign and sigstore-go verify such entries by the promise, as a
v0.1 bundle allows. So the steps run here on sigstore's own parts (pinned by the lock file):
1. the SET holds under a Rekor key of the trusted root, which makes its integrated time trusted;
2. the certificate chains to a Fulcio CA of the trusted root at that time (the chain annotation
   is not trusted for path building, as cosign documents: the trusted root supplies the CAs);
3. its embedded SCT holds under a CT log key; 4. it is a code-signing certificate of a trusted
identity; 5. it was valid at the integrated time; 6. its key signed the payload; 7. the log entry
is this signature by this certificate over this payload's digest (a hashedrekord 0.0.1)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rekor_types
import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import ValidationError
from sigstore._internal.rekor import _hashedrekord_from_parts
from sigstore._internal.sct import verify_sct
from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
from sigstore._internal.trust import KeyringPurpose
from sigstore._utils import KeyID
from sigstore.errors import Error as SigstoreError
from sigstore.hashes import Hashed
from sigstore_models.common.v1 import HashAlgorithm

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.trust.keyless import identity_policy, root_name, sigstore_verifier, trusted_signer
from reconciler.trust.roots import KeylessIdentity

__all__ = ["RekorPromise", "verify_keyless_sig"]


@dataclass(frozen=True)
class RekorPromise:
    """cosign's ``dev.sigstore.cosign/bundle``: a Rekor entry and the log's signature over it."""

    signed_entry_timestamp: bytes
    body: bytes
    integrated_time: int
    log_index: int
    log_id: bytes

    @classmethod
    def parse(cls, annotation: str) -> RekorPromise:
        try:
            document = json.loads(annotation)
            payload = document["Payload"]
            promise = cls(base64.b64decode(document["SignedEntryTimestamp"], validate=True),
                          base64.b64decode(payload["body"], validate=True), _integer(payload["integratedTime"]),
                          _integer(payload["logIndex"]), bytes.fromhex(payload["logID"]))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise Stalled(reasons.SignatureMalformed,
                          f"the cosign signature's Rekor bundle (dev.sigstore.cosign/bundle) cannot be read: {exc!r}") from None
        return promise

    def signed_text(self) -> bytes:
        """What the SET signs: the entry as RFC 8785 canonical JSON, the log id in hex."""
        return rfc8785.dumps({"body": base64.b64encode(self.body).decode(), "integratedTime": self.integrated_time,
                              "logID": self.log_id.hex(), "logIndex": self.log_index})


def verify_keyless_sig(payload: bytes, signature_b64: bytes, certificate_pem: str, rekor_bundle: str | None,
                       identities: tuple[KeylessIdentity, ...], trusted_root: Path | None) -> KeylessIdentity:
    """The trusted identity whose certificate signed ``payload`` (the simple-signing document;
    what it names is the caller's to check)."""
    if not identities:
        raise Stalled(reasons.NoTrustedIdentities, "the cosign signature is keyless (by a certificate), and the site trusts no identities")
    certificate = _certificate(certificate_pem)
    signature = _signature(signature_b64)
    if rekor_bundle is None:
        raise Stalled(reasons.SignatureFormatUnsupported,
                      "the keyless cosign signature has no Rekor bundle (dev.sigstore.cosign/bundle): without the log's "
                      "signed entry timestamp nothing proves when the short-lived certificate signed")
    promise = RekorPromise.parse(rekor_bundle)
    signer = trusted_signer(certificate, identities)
    verifier = sigstore_verifier(trusted_root)
    try:
        signed_at = _check_promise(verifier._trusted_root, promise)
        chain = verifier._verify_chain_at_time(certificate, TimestampVerificationResult(
            source=TimestampSource.TRANSPARENCY_SERVICE, time=signed_at))
        verify_sct(certificate, chain, verifier._trusted_root.ct_keyring(KeyringPurpose.VERIFY))
        _check_profile(certificate)
        identity_policy(certificate, signer).verify(certificate)
        if not certificate.not_valid_before_utc <= signed_at <= certificate.not_valid_after_utc:
            raise SigstoreError(f"the certificate was not valid when the log recorded the signature ({signed_at})")
        _check_signature(certificate, signature, payload)
        _check_entry(promise, certificate, signature, payload)
    except SigstoreError as exc:
        raise Stalled(reasons.BundleVerificationFailed,
                      f"the keyless cosign signature of {signer} does not verify against the trusted root "
                      f"({root_name(trusted_root)}): {exc}") from None
    return signer


def _check_promise(trusted_root: Any, promise: RekorPromise) -> datetime:
    keyring = trusted_root.rekor_keyring(KeyringPurpose.VERIFY)
    try:
        keyring.verify(key_id=KeyID(promise.log_id), signature=promise.signed_entry_timestamp, data=promise.signed_text())
    except SigstoreError as exc:
        raise SigstoreError(f"the Rekor signed entry timestamp does not hold: {exc}") from None
    return datetime.fromtimestamp(promise.integrated_time, tz=UTC)


def _check_profile(certificate: x509.Certificate) -> None:
    """Fulcio's profile, as sigstore's verifier checks it: a digital-signature, code-signing leaf."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise SigstoreError(f"the certificate is not a Fulcio signing certificate: {exc}") from None
    if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        raise SigstoreError("the certificate is not for code signing")


def _check_signature(certificate: x509.Certificate, signature: bytes, payload: bytes) -> None:
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SigstoreError(f"the certificate holds a {type(key).__name__}, not an ECDSA key")
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SigstoreError("the signature over the payload does not verify under the certificate's key") from None


def _check_entry(promise: RekorPromise, certificate: x509.Certificate, signature: bytes, payload: bytes) -> None:
    """The logged entry must be this signature (CVE-2022-36056: a SET of another entry proves nothing)."""
    expected = _hashedrekord_from_parts(certificate, signature,
                                        Hashed(algorithm=HashAlgorithm.SHA2_256, digest=hashlib.sha256(payload).digest()))
    try:
        logged = rekor_types.Hashedrekord.model_validate_json(promise.body)
    except ValidationError:
        raise SigstoreError("the Rekor entry is not a hashedrekord entry") from None
    if logged != expected:
        raise SigstoreError("the Rekor entry is of another signature, certificate or payload")


def _certificate(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise Stalled(reasons.SignatureMalformed,
                      f"the cosign signature's certificate (dev.sigstore.cosign/certificate) is not a PEM certificate: {exc}") from None


def _signature(signature_b64: bytes) -> bytes:
    try:
        return base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Stalled(reasons.SignatureMalformed, "the cosign signature annotation is not base64") from None


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value
