from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils

from reconciler import trust
from reconciler.errors import Stalled

BLOB = b"model bytes \x00\x01\x02" * 1000
DIGEST = hashlib.sha256(BLOB).digest()


@pytest.fixture(scope="module")
def signer() -> ec.EllipticCurvePrivateKey:
    return trust.generate_private_key()


@pytest.fixture(scope="module")
def other_signer() -> ec.EllipticCurvePrivateKey:
    return trust.generate_private_key()


def trusted(key: ec.EllipticCurvePrivateKey, name: str) -> trust.TrustedKey:
    return trust.load_public_key(trust.public_key_pem(key), name)


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(key, encryption=None) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )


# --- keys -------------------------------------------------------------------------------------

def test_key_round_trip_and_key_id(signer):
    loaded = trust.load_private_key(trust.private_key_pem(signer))
    assert loaded.private_numbers() == signer.private_numbers()
    key = trusted(signer, "release")
    der = signer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.key_id == hashlib.sha256(der).hexdigest()
    assert str(key) == f"release ({key.key_id[:16]})"
    assert {key, trusted(signer, "release")} == {key}  # usable in sets and as a cache key
    assert trust.public_key_pem(signer) == trust.public_key_pem(signer.public_key())
    assert trust.public_key_pem(signer).startswith(b"-----BEGIN PUBLIC KEY-----")
    assert trust.private_key_pem(signer).startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize(
    "pem, message",
    [
        (lambda: public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)), "not an ECDSA key"),
        (lambda: public_pem(ec.generate_private_key(ec.SECP384R1())), "secp384r1 is not P-256"),
        (lambda: public_pem(ed25519.Ed25519PrivateKey.generate()), "not an ECDSA key"),
        (lambda: b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
        (lambda: b"just some text", "not a PEM public key"),
        (lambda: private_pem(ec.generate_private_key(ec.SECP256R1())), "not a PEM public key"),
    ],
    ids=["rsa", "p384", "ed25519", "bad-base64-body", "not-pem", "private-key"],
)
def test_load_public_key_refuses(pem: Callable[[], bytes], message: str):
    with pytest.raises(Stalled) as caught:
        trust.load_public_key(pem(), "keys/bad.pub")
    assert caught.value.reason == "TrustKeyInvalid"
    assert "keys/bad.pub" in caught.value.message
    assert message in caught.value.message


@pytest.mark.parametrize(
    "pem, message",
    [
        (
            lambda: private_pem(
                ec.generate_private_key(ec.SECP256R1()), serialization.BestAvailableEncryption(b"secret")
            ),
            "encrypted",
        ),
        (lambda: private_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)), "not an ECDSA key"),
        (lambda: private_pem(ec.generate_private_key(ec.SECP384R1())), "not P-256"),
        (lambda: public_pem(ec.generate_private_key(ec.SECP256R1())), "not a PEM private key"),
        (lambda: b"garbage", "not a PEM private key"),
    ],
    ids=["encrypted", "rsa", "p384", "public-key", "garbage"],
)
def test_load_private_key_refuses(pem: Callable[[], bytes], message: str):
    with pytest.raises(Stalled) as caught:
        trust.load_private_key(pem())
    assert caught.value.reason == "SigningKeyInvalid"
    assert message in caught.value.message


# --- cosign signatures ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "decorate",
    [lambda s: s, lambda s: s + b"\n", lambda s: b"  " + s + b"\r\n\n"],
    ids=["bare", "trailing-newline", "surrounding-whitespace"],
)
def test_good_signature_verifies(signer, decorate):
    key = trusted(signer, "release")
    assert trust.verify_cosign(DIGEST, decorate(trust.sign_digest(signer, DIGEST)), [key]) == key


def test_returns_the_key_that_verified(signer, other_signer):
    first, second = trusted(other_signer, "old"), trusted(signer, "current")
    signature = trust.sign_digest(signer, DIGEST)
    assert trust.verify_cosign(DIGEST, signature, [first, second]) is second


def _der(signer) -> bytes:
    return base64.b64decode(trust.sign_digest(signer, DIGEST))


BAD_SIGNATURES = [
    # id, (signer, other) -> (digest, signature file, key names), reason, message fragment
    (
        "tampered-digest",
        lambda s, o: (hashlib.sha256(BLOB + b"!").digest(), trust.sign_digest(s, DIGEST), ["release", "backup"]),
        "SignatureInvalid",
        "tried keys: release (",
    ),
    (
        "wrong-key",
        lambda s, o: (DIGEST, trust.sign_digest(o, DIGEST), ["release"]),
        "SignatureInvalid",
        "tried keys: release (",
    ),
    (
        "valid-der-wrong-numbers",
        lambda s, o: (DIGEST, base64.b64encode(utils.encode_dss_signature(1, 1)), ["release"]),
        "SignatureInvalid",
        "none of the trusted keys",
    ),
    (
        "truncated-der",
        lambda s, o: (DIGEST, base64.b64encode(_der(s)[:-5]), ["release"]),
        "SignatureMalformed",
        "not an ASN.1 DER",
    ),
    (
        "truncated-base64",
        lambda s, o: (DIGEST, trust.sign_digest(s, DIGEST)[:-3], ["release"]),
        "SignatureMalformed",
        "not base64",
    ),
    (
        "garbage-der",
        lambda s, o: (DIGEST, base64.b64encode(b"\x00" * 70), ["release"]),
        "SignatureMalformed",
        "not an ASN.1 DER",
    ),
    (
        "der-with-trailing-bytes",
        lambda s, o: (DIGEST, base64.b64encode(_der(s) + b"\x00"), ["release"]),
        "SignatureMalformed",
        "not an ASN.1 DER",
    ),
    ("not-base64", lambda s, o: (DIGEST, b"this is not a signature!", ["release"]), "SignatureMalformed", "not base64"),
    ("raw-der-not-base64", lambda s, o: (DIGEST, _der(s), ["release"]), "SignatureMalformed", "not base64"),
    ("empty-file", lambda s, o: (DIGEST, b" \n", ["release"]), "SignatureMalformed", "empty"),
    ("no-keys", lambda s, o: (DIGEST, trust.sign_digest(s, DIGEST), []), "NoTrustedKeys", "no trusted keys"),
]


@pytest.mark.parametrize("case, reason, fragment", [c[1:] for c in BAD_SIGNATURES], ids=[c[0] for c in BAD_SIGNATURES])
def test_bad_signature_is_refused(signer, other_signer, case, reason, fragment):
    digest, signature_file, names = case(signer, other_signer)
    # "release" is the signer's key unless the case signs with the other key.
    keys = [trusted(signer if name == "release" else other_signer, name) for name in names]
    with pytest.raises(Stalled) as caught:
        trust.verify_cosign(digest, signature_file, keys)
    assert caught.value.reason == reason
    assert fragment in caught.value.message
    if reason == "SignatureInvalid":
        assert all(str(key) in caught.value.message for key in keys)


@pytest.mark.parametrize("digest", [DIGEST.hex().encode(), DIGEST[:31], b""], ids=["hex", "short", "empty"])
def test_digest_must_be_raw_sha256(signer, digest):
    with pytest.raises(ValueError, match="32-byte"):
        trust.sign_digest(signer, digest)
    with pytest.raises(ValueError, match="32-byte"):
        trust.verify_cosign(digest, trust.sign_digest(signer, DIGEST), [trusted(signer, "k")])


# --- formats ------------------------------------------------------------------------------------

def test_verify_signature_dispatches_cosign(signer):
    key = trusted(signer, "release")
    signature = trust.sign_digest(signer, DIGEST)
    assert trust.verify_signature(DIGEST, signature, "cosign", [key]) == key
    assert trust.verify_signature(DIGEST, signature, None, [key]) == key


@pytest.mark.parametrize(
    "signature_format, content",
    [("sigstore-bundle", b"{}"), ("model-signing", b"{}"), (None, b'  {"mediaType": "x"}')],
    ids=["sigstore-bundle", "model-signing", "detected-bundle"],
)
def test_verify_signature_refuses_formats_not_supported_yet(signer, signature_format, content):
    with pytest.raises(Stalled) as caught:
        trust.verify_signature(DIGEST, content, signature_format, [trusted(signer, "release")])
    assert caught.value.reason == "SignatureFormatUnsupported"


# --- interoperability: signatures made and checked without our code ---------------------------------

def test_verifies_a_signature_made_over_the_raw_blob(signer):
    """cosign sign-blob signs the blob with ECDSA(SHA256); we only ever see its digest."""
    independent = base64.b64encode(signer.sign(BLOB, ec.ECDSA(hashes.SHA256())))
    assert trust.verify_cosign(DIGEST, independent, [trusted(signer, "release")]).name == "release"


def test_our_signature_verifies_over_the_raw_blob(signer):
    der = base64.b64decode(trust.sign_digest(signer, DIGEST), validate=True)
    signer.public_key().verify(der, BLOB, ec.ECDSA(hashes.SHA256()))  # raises if wrong


@pytest.fixture
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("the openssl command is not installed")
    return path


def test_openssl_accepts_our_signature(openssl, signer, tmp_path: Path):
    (tmp_path / "blob").write_bytes(BLOB)
    (tmp_path / "pub.pem").write_bytes(trust.public_key_pem(signer))
    (tmp_path / "sig.der").write_bytes(base64.b64decode(trust.sign_digest(signer, DIGEST)))
    result = subprocess.run(
        [openssl, "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", "blob"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "Verified OK" in result.stdout


def test_we_accept_an_openssl_signature(openssl, signer, tmp_path: Path):
    (tmp_path / "blob").write_bytes(BLOB)
    (tmp_path / "key.pem").write_bytes(trust.private_key_pem(signer))
    subprocess.run(
        [openssl, "dgst", "-sha256", "-sign", "key.pem", "-out", "sig.der", "blob"],
        cwd=tmp_path, check=True, capture_output=True, timeout=30,
    )
    signature_file = base64.b64encode((tmp_path / "sig.der").read_bytes()) + b"\n"
    assert trust.verify_cosign(DIGEST, signature_file, [trusted(signer, "release")]).name == "release"
