"""What ``reconciler keygen | sign | verify`` (reconciler.cli.keys) do: sign model artifacts without
cosign, in cosign's formats, so a release engineer can switch between the two tools freely.

Key files are cosign's: ``cosign.pub`` is a PEM ``PUBLIC KEY``; ``cosign.key`` is a PEM
``ENCRYPTED SIGSTORE PRIVATE KEY`` (older cosign: ``ENCRYPTED COSIGN PRIVATE KEY``) whose body is the
JSON envelope of go-securesystemslib's ``encrypted`` package: the scrypt-derived key seals the PKCS#8
DER of the ECDSA P-256 key in a NaCl secretbox. Passwords come from ``COSIGN_PASSWORD``, as in cosign,
or from a prompt on a terminal.

Signatures are those of ``cosign sign-blob --key``: the ``.sig`` file is the base64 of an ASN.1 DER
ECDSA signature over SHA-256 of the file, and the bundle is a Sigstore bundle v0.3 with a
``messageSignature`` and a public-key hint. Being offline, the bundle has no transparency-log entry.
Verification is ``reconciler.trust``'s, the very code a site agent runs."""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import json
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.secret
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler import reasons, trust
from reconciler.errors import Stalled, UsageError
from reconciler.trust.bundles import IN_TOTO_PAYLOAD_TYPE, pae

CHUNK_SIZE = 1 << 20

SIGSTORE_KEY_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_KEY_LABEL = "ENCRYPTED COSIGN PRIVATE KEY"
_PLAIN_KEY_LABELS = ("PRIVATE KEY", "EC PRIVATE KEY")
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PASSWORD_ENV = "COSIGN_PASSWORD"

# go-securesystemslib accepts exactly these scrypt parameters (legacy, standard, OWASP), so a tampered
# envelope cannot make decryption arbitrarily expensive. We write the legacy ones: every cosign
# release reads them, while keys made by recent cosign (N=2^16) are unreadable to older releases.
_SCRYPT_ACCEPTED = ({"N": 1 << 15, "r": 8, "p": 1}, {"N": 1 << 16, "r": 8, "p": 1}, {"N": 1 << 17, "r": 8, "p": 1})
_SCRYPT_WRITTEN = _SCRYPT_ACCEPTED[0]
_SCRYPT_MAXMEM = 256 << 20  # the OWASP parameters need 128 MiB; OpenSSL's default cap is 32 MiB
_SALT_SIZE = 32
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


# --- encrypted private keys ---------------------------------------------------------------------

def encrypt_private_key(key: ec.EllipticCurvePrivateKey, password: bytes) -> bytes:
    """``key`` as cosign writes it: PEM ``ENCRYPTED SIGSTORE PRIVATE KEY``."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return _pem_encode(SIGSTORE_KEY_LABEL, encrypt_envelope(der, password))


def decrypt_private_key(pem: bytes, password: bytes) -> ec.EllipticCurvePrivateKey:
    """A cosign encrypted key (either label) or an unencrypted PEM key; the password is ignored for the latter."""
    label, body = _pem_decode(pem)
    if label in _PLAIN_KEY_LABELS:
        return trust.load_private_key(pem)
    if label not in (SIGSTORE_KEY_LABEL, COSIGN_KEY_LABEL):
        raise Stalled(reasons.SigningKeyInvalid, f"a PEM {label!r} block is not a private key")
    # The plaintext is exactly the body of a PKCS#8 PEM; trust's loader checks it is a P-256 key.
    return trust.load_private_key(_pem_encode("PRIVATE KEY", decrypt_envelope(body, password)))


def is_encrypted_key(pem: bytes) -> bool:
    return _pem_decode(pem)[0] in (SIGSTORE_KEY_LABEL, COSIGN_KEY_LABEL)


def encrypt_envelope(plaintext: bytes, password: bytes) -> bytes:
    """go-securesystemslib ``encrypted.Encrypt``: scrypt + NaCl secretbox in a compact JSON envelope,
    fields and order as Go's ``json.Marshal`` writes them."""
    salt = secrets.token_bytes(_SALT_SIZE)
    nonce = secrets.token_bytes(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_derive_key(password, salt, _SCRYPT_WRITTEN))
    envelope = {
        "kdf": {"name": "scrypt", "params": _SCRYPT_WRITTEN, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(box.encrypt(plaintext, nonce).ciphertext),
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def decrypt_envelope(envelope: bytes, password: bytes) -> bytes:
    try:
        data = json.loads(envelope)
        kdf, cipher = data["kdf"], data["cipher"]
        kdf_name, params, salt = kdf["name"], kdf["params"], _unb64(kdf["salt"])
        cipher_name, nonce, ciphertext = cipher["name"], _unb64(cipher["nonce"]), _unb64(data["ciphertext"])
    except (ValueError, KeyError, TypeError) as exc:
        raise Stalled(reasons.SigningKeyInvalid, f"the encrypted key is not a cosign key envelope ({exc!r})") from None
    if kdf_name != "scrypt" or cipher_name != "nacl/secretbox":
        raise Stalled(reasons.SigningKeyInvalid, f"unsupported key encryption {kdf_name!r} + {cipher_name!r}; "
                                                 "cosign keys use scrypt + nacl/secretbox")
    accepted = next((known for known in _SCRYPT_ACCEPTED if known == params), None)
    if accepted is None:
        raise Stalled(reasons.SigningKeyInvalid, f"unsupported scrypt parameters {params}")
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise Stalled(reasons.SigningKeyInvalid, f"the secretbox nonce has {len(nonce)} bytes, not 24")
    box = nacl.secret.SecretBox(_derive_key(password, salt, accepted))
    try:
        return box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise Stalled(reasons.KeyPasswordWrong, "the password does not open the private key "
                                                "(wrong password, or the key file is corrupt)") from None


def _derive_key(password: bytes, salt: bytes, params: dict[str, int]) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=params["N"], r=params["r"], p=params["p"],
                          maxmem=_SCRYPT_MAXMEM, dklen=nacl.secret.SecretBox.KEY_SIZE)


def _pem_encode(label: str, der: bytes) -> bytes:
    body = base64.b64encode(der)
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return b"\n".join([f"-----BEGIN {label}-----".encode(), *lines, f"-----END {label}-----".encode(), b""])


def _pem_decode(pem: bytes) -> tuple[str, bytes]:
    match = _PEM_BLOCK.search(pem)
    if match is None:
        raise Stalled(reasons.SigningKeyInvalid, "not a PEM private key (no BEGIN/END block)")
    try:
        return match.group(1).decode(), base64.b64decode(b"".join(match.group(2).split()), validate=True)
    except (binascii.Error, ValueError):
        raise Stalled(reasons.SigningKeyInvalid, "the PEM block is not base64") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"expected a base64 string, got {type(text).__name__}")
    return base64.b64decode(text, validate=True)


# --- key files and passwords --------------------------------------------------------------------

def read_password(confirm: bool = False) -> bytes:
    """``COSIGN_PASSWORD`` when set (even empty, as in cosign), else a prompt on the terminal."""
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        return from_env.encode()
    if not sys.stdin.isatty():
        raise UsageError(f"the private key needs a password: set {PASSWORD_ENV} or run on a terminal")
    password = getpass.getpass("Enter password for private key: ")
    if confirm and getpass.getpass("Enter password for private key again: ") != password:
        raise UsageError("the two passwords differ")
    return password.encode()


def write_key_pair(prefix: Path, password: bytes) -> tuple[Path, Path]:
    """A new P-256 key pair as ``PREFIX.key`` (encrypted, 0600) and ``PREFIX.pub``; never overwrites."""
    key_path, pub_path = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    existing = [str(path) for path in (key_path, pub_path) if path.exists()]
    if existing:
        raise UsageError(f"refusing to overwrite {', '.join(existing)}")
    key = trust.generate_private_key()
    write_new_file(key_path, encrypt_private_key(key, password), 0o600)
    write_new_file(pub_path, trust.public_key_pem(key), 0o644)
    return key_path, pub_path


def load_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The private key in ``path``, asking for the password only when the key is encrypted."""
    pem = read_named(path, reasons.SigningKeyInvalid, "private key")
    return decrypt_private_key(pem, read_password() if is_encrypted_key(pem) else b"")


def write_new_file(path: Path, content: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise UsageError(f"refusing to overwrite {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(content)


def read_named(path: Path, reason: str, what: str) -> bytes:
    """The bytes of ``path``; Stalled(``reason``) naming it as ``what`` when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise Stalled(reason, f"cannot read {what} {path}: {exc.strerror}") from None


# --- signing --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SignResult:
    """One file's signature, ready to write as a cosign ``.sig`` or as a Sigstore bundle."""

    file: Path
    sha256: bytes
    signature: bytes  # ASN.1 DER ECDSA
    public_key: ec.EllipticCurvePublicKey

    @property
    def cosign_signature(self) -> bytes:
        """The ``.sig`` content: base64 without a newline, as ``cosign sign-blob --output-signature`` writes it."""
        return base64.b64encode(self.signature)

    @property
    def key_hint(self) -> str:
        return key_hint(self.public_key)

    @property
    def bundle(self) -> bytes:
        """A Sigstore bundle v0.3 in protobuf JSON, as ``cosign sign-blob --key --bundle`` writes it."""
        document = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": self.key_hint}},
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(self.sha256)},
                "signature": _b64(self.signature),
            },
        }
        return json.dumps(document, separators=(",", ":")).encode()


def key_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    """cosign's and sigstore-go's hint: base64 of SHA-256 of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64(hashlib.sha256(der).digest())


def statement_bundle(key: ec.EllipticCurvePrivateKey, statement: bytes) -> bytes:
    """A Sigstore bundle v0.3 whose DSSE envelope holds the in-toto ``statement``, signed with
    ``key``: what ``cosign sign --key`` (v3) attaches to an image (without a transparency-log entry)."""
    signature = key.sign(pae(IN_TOTO_PAYLOAD_TYPE, statement), ec.ECDSA(hashes.SHA256()))
    document = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(key.public_key())}, "tlogEntries": []},
        "dsseEnvelope": {"payload": _b64(statement), "payloadType": IN_TOTO_PAYLOAD_TYPE,
                         "signatures": [{"sig": _b64(signature), "keyid": ""}]},
    }
    return json.dumps(document, separators=(",", ":")).encode()


def sign_file(path: Path, key: ec.EllipticCurvePrivateKey) -> SignResult:
    digest = sha256_file(path)
    der = base64.b64decode(trust.sign_digest(key, digest))
    return SignResult(file=path, sha256=digest, signature=der, public_key=key.public_key())


def sha256_file(path: Path) -> bytes:
    sha = hashlib.sha256()
    try:
        with path.open("rb") as blob:
            while chunk := blob.read(CHUNK_SIZE):
                sha.update(chunk)
    except OSError as exc:
        raise Stalled(reasons.FileUnreadable, f"cannot read {path}: {exc.strerror}") from None
    return sha.digest()
