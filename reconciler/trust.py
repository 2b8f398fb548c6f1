"""Artifact signatures: who vouches for the bytes whose digest the manifest pins.

Every format is a ``verify_<format>(sha256_digest, signature_file, trust)`` that returns the trust
root that verified and raises Stalled otherwise; ``verify_signature`` picks one from the manifest's
``signature.format`` (or from the content when the manifest names none). Verification works on
the digest computed while the artifact streamed in, so the blob is never read twice.

Cosign key signatures (``cosign sign-blob --key``): the ``.sig`` file is the base64 of an ASN.1 DER
ECDSA P-256 signature over SHA-256 of the blob, the same bytes ``openssl dgst -sha256 -sign``
writes; public keys are PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from reconciler.errors import Stalled
from reconciler.manifests.models import SignatureFormat

_SHA256_SIZE = 32
# The caller hashed the blob while it streamed in; Prehashed signs/verifies that digest as is.
_ECDSA_PREHASHED_SHA256 = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


@dataclass(frozen=True)
class TrustedKey:
    """A public key a site trusts for artifact signatures; ``name`` is how people refer to it
    (usually the file it came from)."""

    name: str
    public_key: ec.EllipticCurvePublicKey

    @property
    def key_id(self) -> str:
        """Hex SHA-256 of the DER SubjectPublicKeyInfo: stable across PEM re-encodings."""
        der = self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()

    def __hash__(self) -> int:
        # cryptography's key objects are not hashable; the key id stands for the key.
        return hash((self.name, self.key_id))

    def __str__(self) -> str:
        return f"{self.name} ({self.key_id[:16]})"


def verify_signature(
    sha256_digest: bytes, signature_file: bytes, signature_format: SignatureFormat | None, keys: Sequence[TrustedKey]
) -> TrustedKey:
    """Verify in the manifest's ``signature_format``, or in the one the content shows when it names none."""
    chosen = signature_format or detect_format(signature_file)
    if chosen == "cosign":
        return verify_cosign(sha256_digest, signature_file, keys)
    raise Stalled("SignatureFormatUnsupported", f"signature format {chosen!r} is not supported yet; use a cosign key signature")


def detect_format(signature_file: bytes) -> SignatureFormat:
    """Bundles (Sigstore, OpenSSF model-signing) are JSON documents; a cosign ``.sig`` is base64 text."""
    return "sigstore-bundle" if signature_file.lstrip().startswith(b"{") else "cosign"


# --- keys -------------------------------------------------------------------------------------

def load_public_key(pem: bytes, name: str) -> TrustedKey:
    """A cosign public key: PEM ``PUBLIC KEY`` holding an ECDSA P-256 key."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise Stalled("TrustKeyInvalid", f"trusted key {name}: not a PEM public key ({exc})") from None
    _require_p256(key, f"trusted key {name}", "TrustKeyInvalid")
    return TrustedKey(name=name, public_key=key)  # type: ignore[arg-type]


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """An unencrypted PEM private key (PKCS#8 or SEC1) on P-256."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise Stalled("SigningKeyInvalid", "the private key is encrypted; only unencrypted PEM keys are supported") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise Stalled("SigningKeyInvalid", f"not a PEM private key ({exc})") from None
    _require_p256(key, "signing key", "SigningKeyInvalid")
    return key  # type: ignore[return-value]


def _require_p256(key: object, what: str, reason: str) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        raise Stalled(reason, f"{what}: {type(key).__name__} is not an ECDSA key; cosign keys are ECDSA P-256")
    if not isinstance(key.curve, ec.SECP256R1):
        raise Stalled(reason, f"{what}: curve {key.curve.name} is not P-256 (secp256r1)")


# --- cosign signatures ----------------------------------------------------------------------------

def sign_digest(private_key: ec.EllipticCurvePrivateKey, sha256_digest: bytes) -> bytes:
    """The content of a cosign ``.sig`` file for a blob whose SHA-256 is ``sha256_digest``."""
    _require_sha256(sha256_digest)
    der = private_key.sign(sha256_digest, _ECDSA_PREHASHED_SHA256)
    return base64.b64encode(der)


def verify_cosign(sha256_digest: bytes, signature_file: bytes, keys: Sequence[TrustedKey]) -> TrustedKey:
    """The first of ``keys`` under which ``signature_file`` signs the blob of ``sha256_digest``."""
    _require_sha256(sha256_digest)
    if not keys:
        raise Stalled("NoTrustedKeys", "no trusted keys are configured, so no cosign signature can be verified")
    der = _decode_cosign_signature(signature_file)
    for key in keys:
        try:
            key.public_key.verify(der, sha256_digest, _ECDSA_PREHASHED_SHA256)
        except InvalidSignature:
            continue
        return key
    tried = ", ".join(str(key) for key in keys)
    raise Stalled("SignatureInvalid", f"the cosign signature verifies under none of the trusted keys; tried keys: {tried}")


def _decode_cosign_signature(signature_file: bytes) -> bytes:
    text = signature_file.strip()
    if not text:
        raise Stalled("SignatureMalformed", "the cosign signature file is empty")
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Stalled("SignatureMalformed", "the cosign signature is not base64") from None
    try:
        utils.decode_dss_signature(der)
    except ValueError:
        raise Stalled("SignatureMalformed", "the cosign signature is not an ASN.1 DER ECDSA signature") from None
    return der


def _require_sha256(digest: bytes) -> None:
    # A wrong length is a caller's bug (it passed a hex string or another hash), not bad input.
    if len(digest) != _SHA256_SIZE:
        raise ValueError(f"expected a raw 32-byte SHA-256 digest, got {len(digest)} bytes")
