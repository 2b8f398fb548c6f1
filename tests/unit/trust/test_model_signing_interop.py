"""Interoperability with OpenSSF model_signing (the model-transparency project's library): a model
directory signed with its elliptic-key signer verifies file by file with our code, a tampered file
is refused, and a bundle we shape by hand from the documented format satisfies its verifier."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import model_signing
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler import trust
from reconciler.devtools.trust_fixtures import (
    dsse_bundle,
    encode,
    model_signing_hint,
    model_signing_statement,
)
from reconciler.errors import Stalled
from reconciler.trust import TrustRoots

FILES = {
    "model.onnx": b"\x08\x07onnx weights" * 300,
    "model-int8.onnx": b"\x08\x07int8 weights" * 200,
    "tokenizer/vocab.txt": b"hello\nworld\n",
}


@pytest.fixture(scope="module")
def signer() -> ec.EllipticCurvePrivateKey:
    return trust.generate_private_key()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.fixture
def key_files(tmp_path: Path, signer) -> tuple[Path, Path]:
    private, public = tmp_path / "signing.key", tmp_path / "signing.pub"
    private.write_bytes(trust.private_key_pem(signer))
    public.write_bytes(trust.public_key_pem(signer))
    return private, public


def sign_with_model_signing(model_dir: Path, private_key: Path, signature: Path) -> bytes:
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key).sign(model_dir, signature)
    return signature.read_bytes()


def verify_file(bundle: bytes, name: str, data: bytes, roots: TrustRoots, declared="model-signing") -> trust.Verified:
    return trust.verify_artifact_signature(hashlib.sha256(data).digest(), name, bundle, declared, roots)


def test_their_bundle_verifies_for_every_file(model_dir, key_files, signer, tmp_path):
    bundle = sign_with_model_signing(model_dir, key_files[0], tmp_path / "model.sig")
    key = trust.load_public_key(trust.public_key_pem(signer), "model-signer.pub")
    assert trust.detect_format(bundle) == "model-signing"
    for name, data in FILES.items():
        assert verify_file(bundle, name, data, TrustRoots(keys=(key,))) == trust.Verified("model-signing", key=key)
        assert verify_file(bundle, name, data, TrustRoots(keys=(key,)), declared=None).format == "model-signing"


def test_their_bundle_names_our_key_in_the_hint(model_dir, key_files, signer, tmp_path):
    bundle = json.loads(sign_with_model_signing(model_dir, key_files[0], tmp_path / "model.sig"))
    key = trust.load_public_key(trust.public_key_pem(signer), "model-signer.pub")
    assert bundle["verificationMaterial"]["publicKey"]["hint"] in key.hints


def test_tampered_file_is_refused(model_dir, key_files, signer, tmp_path):
    bundle = sign_with_model_signing(model_dir, key_files[0], tmp_path / "model.sig")
    roots = TrustRoots(keys=(trust.load_public_key(trust.public_key_pem(signer), "model-signer.pub"),))
    tampered = bytearray(FILES["model.onnx"])
    tampered[10] ^= 0xFF
    with pytest.raises(Stalled) as caught:
        verify_file(bundle, "model.onnx", bytes(tampered), roots)
    assert caught.value.reason == "BundleDigestMismatch"
    assert "model.onnx" in caught.value.message


@pytest.mark.parametrize("name", ["weights.onnx", "vocab.txt", "./model.onnx"])
def test_file_not_in_their_manifest_is_refused(model_dir, key_files, signer, tmp_path, name):
    bundle = sign_with_model_signing(model_dir, key_files[0], tmp_path / "model.sig")
    roots = TrustRoots(keys=(trust.load_public_key(trust.public_key_pem(signer), "model-signer.pub"),))
    with pytest.raises(Stalled) as caught:
        verify_file(bundle, name, FILES["model.onnx"], roots)
    assert caught.value.reason == "StatementMissingFile"
    assert f"DSSE statement does not list {name}" in caught.value.message


def test_their_bundle_refused_under_another_key(model_dir, key_files, tmp_path):
    bundle = sign_with_model_signing(model_dir, key_files[0], tmp_path / "model.sig")
    other = trust.load_public_key(trust.public_key_pem(trust.generate_private_key()), "other.pub")
    with pytest.raises(Stalled) as caught:
        verify_file(bundle, "model.onnx", FILES["model.onnx"], TrustRoots(keys=(other,)))
    assert caught.value.reason == "SignatureInvalid" and "other.pub (" in caught.value.message


def test_their_verifier_accepts_our_documented_shape(model_dir, key_files, signer, tmp_path):
    """The fixture bundles our tests rely on are what model_signing itself accepts."""
    signature = tmp_path / "ours.sig"
    signature.write_bytes(encode(dsse_bundle(signer, model_signing_statement(FILES), hint=model_signing_hint(signer))))
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key_files[1]).verify(model_dir, signature)


def test_their_verifier_rejects_our_shape_for_a_tampered_model(model_dir, key_files, signer, tmp_path):
    signature = tmp_path / "ours.sig"
    signature.write_bytes(encode(dsse_bundle(signer, model_signing_statement(FILES), hint=model_signing_hint(signer))))
    (model_dir / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="Signature mismatch"):
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key_files[1]).verify(model_dir, signature)
