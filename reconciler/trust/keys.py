"""Keys and cosign key signatures (``cosign sign-blob --key``).

A cosign ``.sig`` file is the base64 of an ASN.1 DER ECDSA P-256 signature over SHA-256 of the blob,
the same bytes ``openssl dgst -sha256 -sign`` writes; public keys are PEM ``PUBLIC KEY``
(SubjectPublicKeyInfo). Verification works on the digest computed while the artifact streamed
in, so the blob is never read twice."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from reconciler import reasons
from reconciler.errors import Stalled

_SHA256_SIZE = 32
# The caller hashed the blob while it streamed in; Prehashed signs/verifies that digest as is.
ECDSA_PREHASHED_SHA256 = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


@dataclass(frozen=True)
class TrustedKey:
    """A public key a site trusts for artifact signatures; ``name`` is how people refer to it
    (usually the file it came from)."""

    name: str
    public_key: ec.EllipticCurvePublicKey

    @cached_property
    def key_id(self) -> str:
        """Hex SHA-256 of the DER SubjectPublicKeyInfo: stable across PEM re-encodings."""
        return hashlib.sha256(self._der).hexdigest()

    @cached_property
    def hints(self) -> frozenset[str]:
        """The ``publicKey.hint`` values signers write for this key in Sigstore bundles: cosign
        writes base64 SHA-256 of the DER key, OpenSSF model_signing hex SHA-256 of the PEM key."""
        pem = self.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        der_digest = hashlib.sha256(self._der).digest()
        return frozenset({self.key_id, base64.b64encode(der_digest).decode(), hashlib.sha256(pem).hexdigest()})

    @property
    def _der(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def __hash__(self) -> int:
        # cryptography's key objects are not hashable; the key id stands for the key.
        return hash((self.name, self.key_id))

    def __str__(self) -> str:
        return f"{self.name} ({self.key_id[:16]})"


def describe_keys(keys: Sequence[TrustedKey]) -> str:
    return ", ".join(str(key) for key in keys)


def load_public_key(pem: bytes, name: str) -> TrustedKey:
    """A cosign public key: PEM ``PUBLIC KEY`` holding an ECDSA P-256 key."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise Stalled(reasons.TrustKeyInvalid, f"trusted key {name}: not a PEM public key ({exc})") from None
    _require_p256(key, f"trusted key {name}", reasons.TrustKeyInvalid)
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
        raise Stalled(reasons.SigningKeyInvalid, "the private key is encrypted; only unencrypted PEM keys are supported") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise Stalled(reasons.SigningKeyInvalid, f"not a PEM private key ({exc})") from None
    _require_p256(key, "signing key", reasons.SigningKeyInvalid)
    return key  # type: ignore[return-value]


def _require_p256(key: object, what: str, reason: str) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        raise Stalled(reason, f"{what}: {type(key).__name__} is not an ECDSA key; cosign keys are ECDSA P-256")
    if not isinstance(key.curve, ec.SECP256R1):
        raise Stalled(reason, f"{what}: curve {key.curve.name} is not P-256 (secp256r1)")


# --- cosign signatures ----------------------------------------------------------------------------

def sign_digest(private_key: ec.EllipticCurvePrivateKey, sha256_digest: bytes) -> bytes:
    """The content of a cosign ``.sig`` file for a blob whose SHA-256 is ``sha256_digest``."""
    require_sha256(sha256_digest)
    der = private_key.sign(sha256_digest, ECDSA_PREHASHED_SHA256)
    return base64.b64encode(der)


def verify_cosign(sha256_digest: bytes, signature_file: bytes, keys: Sequence[TrustedKey]) -> TrustedKey:
    """The first of ``keys`` under which ``signature_file`` signs the blob of ``sha256_digest``."""
    require_sha256(sha256_digest)
    if not keys:
        raise Stalled(reasons.NoTrustedKeys, "no trusted keys are configured, so no cosign signature can be verified")
    der = decode_der_signature(signature_file, "the cosign signature")
    key = first_verifying_key(keys, der, sha256_digest, ECDSA_PREHASHED_SHA256)
    if key is None:
        raise Stalled(reasons.SignatureInvalid,
                      f"the cosign signature verifies under none of the trusted keys; tried keys: {describe_keys(keys)}")
    return key


def first_verifying_key(keys: Sequence[TrustedKey], der: bytes, data: bytes,
                        algorithm: ec.ECDSA) -> TrustedKey | None:
    for key in keys:
        try:
            key.public_key.verify(der, data, algorithm)
        except InvalidSignature:
            continue
        return key
    return None


def decode_der_signature(text: bytes | str, what: str) -> bytes:
    """``what`` (base64 of an ASN.1 DER ECDSA signature) decoded and checked for shape."""
    text = text.strip()
    if not text:
        raise Stalled(reasons.SignatureMalformed, f"{what} is empty")
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Stalled(reasons.SignatureMalformed, f"{what} is not base64") from None
    try:
        utils.decode_dss_signature(der)
    except ValueError:
        raise Stalled(reasons.SignatureMalformed, f"{what} is not an ASN.1 DER ECDSA signature") from None
    return der


def require_sha256(digest: bytes) -> None:
    # A wrong length is a caller's bug (it passed a hex string or another hash), not bad input.
    if len(digest) != _SHA256_SIZE:
        raise ValueError(f"expected a raw 32-byte SHA-256 digest, got {len(digest)} bytes")
