"""keygen / sign / verify in cosign's formats. Compatibility is checked against independent code in
this file (hashlib.scrypt + PyNaCl, plain ``cryptography``, openssl) and against bytes made by Go:
go-securesystemslib's own test vectors and a key written by cosign."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pty
import select
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nacl.secret
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from reconciler import trust
from reconciler.cli.main import main as cli_main
from reconciler.devtools.trust_fixtures import IDENTITY, ISSUER, LocalSigstore
from reconciler.errors import Stalled, UsageError
from reconciler.trust import signing

REPO = Path(__file__).resolve().parents[2]
DEMO_KEYS = REPO / "example-fleet-repo" / "keys"
PASSWORD = b"correct horse battery staple"
BLOB = os.urandom(1 << 20) + b"tail past one chunk" * 1000  # more than one 1 MiB read


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return trust.generate_private_key()


@pytest.fixture(scope="module")
def encrypted_pem(key) -> bytes:
    return signing.encrypt_private_key(key, PASSWORD)


def pkcs8_der(key) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def spki_der(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- an independent implementation of go-securesystemslib's `encrypted` package ---------------------

def independent_seal(plaintext: bytes, password: bytes, n: int = 32768, label: str = "ENCRYPTED SIGSTORE PRIVATE KEY",
                     **overrides) -> bytes:
    salt, nonce = os.urandom(32), os.urandom(24)
    box_key = hashlib.scrypt(password, salt=salt, n=n, r=8, p=1, maxmem=1 << 28, dklen=32)
    sealed = nacl.secret.SecretBox(box_key).encrypt(plaintext, nonce).ciphertext
    envelope = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": 8, "p": 1}, "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    for path, value in overrides.items():  # e.g. cipher__name="aes"
        *parents, leaf = path.split("__")
        node = envelope
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return pem(label, json.dumps(envelope).encode())


def independent_open(pem_bytes: bytes, password: bytes) -> bytes:
    body = b"".join(line for line in pem_bytes.splitlines() if not line.startswith(b"-----"))
    envelope = json.loads(base64.b64decode(body))
    params = envelope["kdf"]["params"]
    box_key = hashlib.scrypt(password, salt=base64.b64decode(envelope["kdf"]["salt"]), n=params["N"], r=params["r"],
                             p=params["p"], maxmem=1 << 28, dklen=32)
    return nacl.secret.SecretBox(box_key).decrypt(base64.b64decode(envelope["ciphertext"]),
                                                  base64.b64decode(envelope["cipher"]["nonce"]))


def pem(label: str, der: bytes) -> bytes:
    return f"-----BEGIN {label}-----\n{base64.encodebytes(der).decode()}-----END {label}-----\n".encode()


# --- encrypted keys -------------------------------------------------------------------------------------

def test_encrypted_key_round_trip(key, encrypted_pem):
    assert encrypted_pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert encrypted_pem.endswith(b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert signing.is_encrypted_key(encrypted_pem)
    assert signing.decrypt_private_key(encrypted_pem, PASSWORD).private_numbers() == key.private_numbers()


def test_wrong_password_is_refused(encrypted_pem):
    with pytest.raises(Stalled) as caught:
        signing.decrypt_private_key(encrypted_pem, PASSWORD + b"!")
    assert caught.value.reason == "KeyPasswordWrong"


def test_envelope_is_the_one_cosign_writes(key, encrypted_pem):
    """Field names, order and encoding of go-securesystemslib's `encrypted.Encrypt` under Go's json.Marshal."""
    lines = encrypted_pem.splitlines()
    assert all(len(line) <= 64 for line in lines[1:-1]) and len(lines[1]) == 64  # Go's pem.Encode wraps at 64
    body = base64.b64decode(b"".join(lines[1:-1]))
    assert b" " not in body  # compact, as json.Marshal writes it
    envelope = json.loads(body)
    assert list(envelope) == ["kdf", "cipher", "ciphertext"]
    assert list(envelope["kdf"]) == ["name", "params", "salt"]
    assert envelope["kdf"]["name"] == "scrypt"
    assert json.dumps(envelope["kdf"]["params"]) == '{"N": 32768, "r": 8, "p": 1}'
    assert len(base64.b64decode(envelope["kdf"]["salt"], validate=True)) == 32
    assert envelope["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(envelope["cipher"]["nonce"], validate=True)) == 24
    assert len(base64.b64decode(envelope["ciphertext"], validate=True)) == len(pkcs8_der(key)) + 16  # + Poly1305 tag


def test_independent_code_opens_our_key(key, encrypted_pem):
    assert independent_open(encrypted_pem, PASSWORD) == pkcs8_der(key)


@pytest.mark.parametrize(
    "n, label",
    [(32768, "ENCRYPTED SIGSTORE PRIVATE KEY"), (32768, "ENCRYPTED COSIGN PRIVATE KEY"),
     (65536, "ENCRYPTED SIGSTORE PRIVATE KEY"), (131072, "ENCRYPTED SIGSTORE PRIVATE KEY")],
    ids=["legacy", "older-cosign-label", "standard", "owasp"],
)
def test_we_open_an_independently_sealed_key(key, n, label):
    sealed = independent_seal(pkcs8_der(key), PASSWORD, n=n, label=label)
    assert signing.decrypt_private_key(sealed, PASSWORD).private_numbers() == key.private_numbers()


# go-securesystemslib encrypted/encrypted_test.go (TestDecrypt and kdfVectors), password "supersecret":
# envelopes sealed by the Go code cosign uses. The kdfVectors seal the JSON of a []byte.
GO_VECTORS = [
    (b'{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"N9a7x5JFGbrtB2uBR81jPwp0eiLR4A7FV3mjVAQrg1g="},'
     b'"cipher":{"name":"nacl/secretbox","nonce":"2h8HxMmgRfuYdpswZBQaU3xJ1nkA/5Ik"},'
     b'"ciphertext":"SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}', b"reallyimportant"),
    (b'{"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"FhzPOt9/bJG4PTq6lQ6ecG6GzaOuOy/ynG5+yRiFlNs="},'
     b'"cipher":{"name":"nacl/secretbox","nonce":"aw1ng1jHaDz/tQ7V2gR9O2+IGQ8xJEuE"},'
     b'"ciphertext":"HycvuLZL4sYH0BrYTh4E/H20VtAW6u5zL5Pr+IBjYLYnCPzDkq8="}', b'"cmVhbGx5aW1wb3J0YW50"'),
    (b'{"kdf":{"name":"scrypt","params":{"N":131072,"r":8,"p":1},"salt":"m38E3kouJTtiheLQN22NQ8DTito5hrjpUIskqcd375k="},'
     b'"cipher":{"name":"nacl/secretbox","nonce":"Y6PM13yA+o44pE/W1ZBwczeGnTV/m9Zc"},'
     b'"ciphertext":"6H8sqj1K6B6yDjtH5AQ6lbFigg/C2yDDJc4rYJ79w9aVPImFIPI="}', b'"cmVhbGx5aW1wb3J0YW50"'),
]


@pytest.mark.parametrize("envelope, plaintext", GO_VECTORS, ids=["legacy", "standard", "owasp"])
def test_go_securesystemslib_vectors(envelope, plaintext):
    assert signing.decrypt_envelope(envelope, b"supersecret") == plaintext


def test_go_vector_with_a_wrong_password():
    with pytest.raises(Stalled) as caught:
        signing.decrypt_envelope(GO_VECTORS[0][0], b"supersecreT")
    assert caught.value.reason == "KeyPasswordWrong"


# A key written by cosign (N=2^16) with an empty password: a test fixture published in conforma/cli
# (internal/validate/vsa), so it is nobody's secret.
COSIGN_MADE_KEY = b"""-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJLYU9OQzduQVJLOVgxM1FoaWFucjAwTTBGYys2Sitr
dnAxN1FuanpiVk9nPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJVOHZqWWtqMlZOUFZGdlZFZWZ3bXZ5VGloUERrelBoaCJ9LCJj
aXBoZXJ0ZXh0IjoidWNWMnQ4TTZVNFJvb29FOXc0d3dkc3E1RDYrS2RKY245dERT
KzFwRDRGN040SVJOWEgzSTBua3h1a3NackFOUHR1emIvTkVYQ201dUp3Zjh3Qzl1
VlprbXdwNU5jRUZ6b3ZNS3JCZmNvdXdjaEkrMzkrQ0NhbVZPbzBucmRnZjhvcmpK
dXdrWDBYL1phY0RUTERGaUxyc1laMWVMMmlqMGU1MVRpZmVQNTl4WXNPK1FnM1Jv
OURRVjNQMk9ndDFDaVFHeGg1VXhUZytGc3c9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
"""
COSIGN_MADE_PUB = (b"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMk2x2CCtYaFNteFO9CDuOMyDP54D"
                   b"5+gXKKweldxuaq7Ns+3RIZDb/7fSkae3hDK7/ZdvR46/U6mvcFyncxHHSQ==")


def test_opens_a_key_written_by_cosign():
    key = signing.decrypt_private_key(COSIGN_MADE_KEY, b"")
    assert spki_der(key) == base64.b64decode(COSIGN_MADE_PUB)
    with pytest.raises(Stalled, match="KeyPasswordWrong"):
        signing.decrypt_private_key(COSIGN_MADE_KEY, b"guess")


def test_plain_pkcs8_demo_key_needs_no_password():
    demo = (DEMO_KEYS / "demo.key").read_bytes()
    assert not signing.is_encrypted_key(demo)
    key = signing.decrypt_private_key(demo, b"ignored")
    assert trust.public_key_pem(key) == (DEMO_KEYS / "demo.pub").read_bytes()


def _tampered_ciphertext(key) -> bytes:
    body = json.loads(base64.b64decode(b"".join(independent_seal(pkcs8_der(key), PASSWORD).splitlines()[1:-1])))
    sealed = bytearray(base64.b64decode(body["ciphertext"]))
    sealed[-1] ^= 1
    body["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    return pem("ENCRYPTED SIGSTORE PRIVATE KEY", json.dumps(body).encode())


MALFORMED_KEYS: list[tuple[str, Callable[[ec.EllipticCurvePrivateKey], bytes], str, str]] = [
    ("not-pem", lambda k: b"hello", "SigningKeyInvalid", "no BEGIN/END"),
    ("certificate-label", lambda k: pem("CERTIFICATE", b"\x30\x00"), "SigningKeyInvalid", "is not a private key"),
    ("body-not-base64", lambda k: b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n!!!\n"
                                  b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n", "SigningKeyInvalid", "not base64"),
    ("body-not-json", lambda k: pem("ENCRYPTED SIGSTORE PRIVATE KEY", b"\xff\xfe"), "SigningKeyInvalid", "envelope"),
    ("body-json-list", lambda k: pem("ENCRYPTED SIGSTORE PRIVATE KEY", b"[]"), "SigningKeyInvalid", "envelope"),
    ("no-ciphertext", lambda k: independent_seal(b"x", PASSWORD, ciphertext=None), "SigningKeyInvalid", "envelope"),
    ("salt-not-base64", lambda k: independent_seal(b"x", PASSWORD, kdf__salt="%%%"), "SigningKeyInvalid", "envelope"),
    ("other-kdf", lambda k: independent_seal(b"x", PASSWORD, kdf__name="argon2"), "SigningKeyInvalid", "'argon2'"),
    ("other-cipher", lambda k: independent_seal(b"x", PASSWORD, cipher__name="aes-gcm"), "SigningKeyInvalid",
     "'aes-gcm'"),
    # Parameters outside the three known sets are refused before any work: a tampered N must not cost minutes.
    ("huge-n", lambda k: independent_seal(b"x", PASSWORD, kdf__params={"N": 1 << 30, "r": 8, "p": 1}),
     "SigningKeyInvalid", "unsupported scrypt parameters"),
    ("tiny-n", lambda k: independent_seal(b"x", PASSWORD, kdf__params={"N": 2, "r": 8, "p": 1}),
     "SigningKeyInvalid", "unsupported scrypt parameters"),
    ("short-nonce", lambda k: independent_seal(b"x", PASSWORD, cipher__nonce="AAAA"), "SigningKeyInvalid", "nonce"),
    ("plaintext-not-a-key", lambda k: independent_seal(b"not a key", PASSWORD), "SigningKeyInvalid",
     "not a PEM private key"),
    ("p384-key", lambda k: independent_seal(pkcs8_der(ec.generate_private_key(ec.SECP384R1())), PASSWORD),
     "SigningKeyInvalid", "secp384r1 is not P-256"),
    ("tampered-ciphertext", _tampered_ciphertext, "KeyPasswordWrong", "corrupt"),
]


@pytest.mark.parametrize("make, reason, fragment", [m[1:] for m in MALFORMED_KEYS], ids=[m[0] for m in MALFORMED_KEYS])
def test_malformed_key_is_refused(key, make, reason, fragment):
    with pytest.raises(Stalled) as caught:
        signing.decrypt_private_key(make(key), PASSWORD)
    assert caught.value.reason == reason
    assert fragment in caught.value.message


# --- key files ------------------------------------------------------------------------------------------

def test_write_key_pair(tmp_path: Path):
    key_path, pub_path = signing.write_key_pair(tmp_path / "release", PASSWORD)
    assert (key_path.name, pub_path.name) == ("release.key", "release.pub")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = signing.decrypt_private_key(key_path.read_bytes(), PASSWORD)
    assert trust.public_key_pem(key) == pub_path.read_bytes()


@pytest.mark.parametrize("existing", ["release.key", "release.pub"])
def test_write_key_pair_never_overwrites(tmp_path: Path, existing: str):
    (tmp_path / existing).write_bytes(b"precious")
    with pytest.raises(UsageError, match="refusing to overwrite"):
        signing.write_key_pair(tmp_path / "release", PASSWORD)
    assert (tmp_path / existing).read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]  # nothing half-written


# --- signatures ---------------------------------------------------------------------------------------

@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(BLOB)
    return path


def test_signature_verifies_over_the_raw_bytes(key, blob):
    result = signing.sign_file(blob, key)
    assert result.sha256 == hashlib.sha256(BLOB).digest()
    assert b"\n" not in result.cosign_signature  # cosign writes the base64 without a newline
    der = base64.b64decode(result.cosign_signature, validate=True)
    key.public_key().verify(der, BLOB, ec.ECDSA(hashes.SHA256()))  # raises if it does not verify


def test_openssl_verifies_our_signature(key, blob, tmp_path: Path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    (tmp_path / "sig.der").write_bytes(signing.sign_file(blob, key).signature)
    (tmp_path / "key.pub").write_bytes(trust.public_key_pem(key))
    done = subprocess.run([openssl, "dgst", "-sha256", "-verify", "key.pub", "-signature", "sig.der", blob.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "Verified OK" in done.stdout


def test_reconciler_verify_accepts_an_independent_signature(key, blob, tmp_path: Path, capsys):
    (tmp_path / "model.onnx.sig").write_bytes(base64.b64encode(key.sign(BLOB, ec.ECDSA(hashes.SHA256()))))
    (tmp_path / "key.pub").write_bytes(trust.public_key_pem(key))
    assert cli_main(["verify", str(blob), "--key", str(tmp_path / "key.pub")]) == 0
    assert f"cosign signature by key {tmp_path / 'key.pub'} (" in capsys.readouterr().out


# --- bundles ------------------------------------------------------------------------------------------

def test_bundle_is_the_one_cosign_writes(key, blob):
    """Sigstore bundle v0.3 (protobuf JSON) with a messageSignature and cosign's public-key hint."""
    bundle = json.loads(signing.sign_file(blob, key).bundle)
    assert bundle == {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": base64.b64encode(hashlib.sha256(spki_der(key)).digest()).decode()}},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": base64.b64encode(hashlib.sha256(BLOB).digest()).decode()},
            "signature": bundle["messageSignature"]["signature"],
        },
    }
    der = base64.b64decode(bundle["messageSignature"]["signature"], validate=True)
    key.public_key().verify(der, BLOB, ec.ECDSA(hashes.SHA256()))


def test_our_bundle_verifies(key, blob, tmp_path: Path, capsys):
    (tmp_path / "model.bundle").write_bytes(signing.sign_file(blob, key).bundle)
    (tmp_path / "key.pub").write_bytes(trust.public_key_pem(key))
    assert cli_main(["verify", str(blob), "--key", str(tmp_path / "key.pub"),
                         "--bundle", str(tmp_path / "model.bundle")]) == 0
    assert f"sigstore-bundle signature by key {tmp_path / 'key.pub'} (" in capsys.readouterr().out


def test_verify_keyless_bundle_by_identity(blob, tmp_path: Path, capsys):
    """--identity/--issuer: a keyless bundle from a local Sigstore (Fulcio, CT log, Rekor stand-ins)."""
    sigstore = LocalSigstore()
    root = sigstore.write_trusted_root(tmp_path / "trusted_root.json")
    (tmp_path / "model.bundle").write_text(json.dumps(sigstore.sign_blob(BLOB)))
    common = [str(blob), "--bundle", str(tmp_path / "model.bundle"), "--trusted-root", str(root)]
    assert cli_main(["verify", *common, "--identity", IDENTITY, "--issuer", ISSUER]) == 0
    assert f"by identity {IDENTITY} (issuer {ISSUER})" in capsys.readouterr().out
    assert cli_main(["verify", *common, "--identity", "someone@example.com", "--issuer", ISSUER]) == 1
    assert "CertificateIdentityMismatch" in capsys.readouterr().err


# --- the commands, as real processes ----------------------------------------------------------------------

def run(args: list[str], cwd: Path, password: str | None = None, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != signing.PASSWORD_ENV}
    if password is not None:
        env[signing.PASSWORD_ENV] = password
    return subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, **kwargs)


def test_keygen_sign_verify_round_trip(tmp_path: Path):
    (tmp_path / "model.onnx").write_bytes(BLOB)
    made = run(["keygen"], tmp_path, password="s3cret")
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE((tmp_path / "cosign.key").stat().st_mode) == 0o600
    key_id = trust.load_public_key((tmp_path / "cosign.pub").read_bytes(), "cosign.pub").key_id
    assert key_id in made.stdout

    signed = run(["sign", "model.onnx", "--key", "cosign.key", "--bundle", "model.bundle"], tmp_path, password="s3cret")
    assert signed.returncode == 0, signed.stderr
    assert f"cosign.key ({key_id[:16]})" in signed.stdout
    assert json.loads((tmp_path / "model.bundle").read_text())["mediaType"] == signing.BUNDLE_MEDIA_TYPE

    verified = run(["verify", "model.onnx", "--key", "cosign.pub"], tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert f"Verified OK: model.onnx: cosign signature by key cosign.pub ({key_id[:16]})" in verified.stdout

    verified = run(["verify", "model.onnx", "--key", "cosign.pub", "--bundle", "model.bundle"], tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert f"Verified OK: model.onnx: sigstore-bundle signature by key cosign.pub ({key_id[:16]})" in verified.stdout


def test_signing_with_the_plain_demo_key_asks_no_password(tmp_path: Path):
    (tmp_path / "model.onnx").write_bytes(b"weights")
    done = run(["sign", "model.onnx", "--key", str(DEMO_KEYS / "demo.key"), "--output-signature", "out.sig"], tmp_path)
    assert done.returncode == 0, done.stderr
    verified = run(["verify", "model.onnx", "--key", str(DEMO_KEYS / "demo.pub"), "--signature", "out.sig"], tmp_path)
    assert verified.returncode == 0, verified.stderr


def test_keygen_refuses_to_overwrite(tmp_path: Path):
    (tmp_path / "cosign.key").write_text("precious")
    done = run(["keygen"], tmp_path, password="pw")
    assert done.returncode == 2
    assert "refusing to overwrite cosign.key" in done.stderr
    assert (tmp_path / "cosign.key").read_text() == "precious"


def test_no_password_without_a_terminal_is_a_usage_error(tmp_path: Path):
    done = run(["keygen", "--output-prefix", "k"], tmp_path)
    assert done.returncode == 2
    assert "set COSIGN_PASSWORD or run on a terminal" in done.stderr
    assert not list(tmp_path.iterdir())


def run_on_terminal(args: list[str], cwd: Path, answers: list[bytes]) -> tuple[int, str]:
    """Run the command with a pseudo-terminal as its terminal and answer each password prompt in turn;
    return (exit code, screen). Answers wait for their prompt: getpass discards input typed ahead."""
    primary, replica = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != signing.PASSWORD_ENV}
    process = subprocess.Popen([sys.executable, "-m", "reconciler", *args], cwd=cwd, env=env,
                               stdin=replica, stdout=replica, stderr=replica, start_new_session=True)
    os.close(replica)
    screen, pending, deadline = b"", list(answers), time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.2)
            try:
                screen += os.read(primary, 4096) if ready else b""
            except OSError:  # EIO: the process closed the terminal
                break
            if pending and screen.count(b"password for private key") > len(answers) - len(pending):
                os.write(primary, pending.pop(0) + b"\n")
            if not ready and process.poll() is not None:
                break
        return process.wait(timeout=10), screen.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)


def test_passwords_typed_on_a_terminal(tmp_path: Path):
    code, screen = run_on_terminal(["keygen"], tmp_path, [b"typed-pw", b"typed-pw"])
    assert code == 0, screen
    assert "Enter password for private key again" in screen
    assert signing.decrypt_private_key((tmp_path / "cosign.key").read_bytes(), b"typed-pw")
    (tmp_path / "model.onnx").write_bytes(b"weights")
    code, screen = run_on_terminal(["sign", "model.onnx", "--key", "cosign.key"], tmp_path, [b"typed-pw"])
    assert code == 0, screen
    assert "again" not in screen  # signing asks once
    assert (tmp_path / "model.onnx.sig").exists()


def test_keygen_refuses_different_passwords(tmp_path: Path):
    code, screen = run_on_terminal(["keygen"], tmp_path, [b"one", b"two"])
    assert code == 2
    assert "the two passwords differ" in screen
    assert not (tmp_path / "cosign.key").exists()


# --- bad inputs to the commands -----------------------------------------------------------------------------

@pytest.fixture
def signed(tmp_path: Path, key) -> Path:
    """A signed model.onnx with its .sig and bundle, the signer's key.pub, another.pub and a P-384 p384.pub."""
    blob = tmp_path / "model.onnx"
    blob.write_bytes(BLOB)
    result = signing.sign_file(blob, key)
    (tmp_path / "model.onnx.sig").write_bytes(result.cosign_signature)
    (tmp_path / "model.bundle").write_bytes(result.bundle)
    (tmp_path / "key.pub").write_bytes(trust.public_key_pem(key))
    (tmp_path / "another.pub").write_bytes(trust.public_key_pem(trust.generate_private_key()))
    (tmp_path / "p384.pub").write_bytes(trust.public_key_pem(ec.generate_private_key(ec.SECP384R1())))
    return tmp_path


def _tamper_signature(path: Path) -> None:
    r, s = utils.decode_dss_signature(base64.b64decode(path.read_bytes()))
    path.write_bytes(base64.b64encode(utils.encode_dss_signature(r, s ^ 1)))  # still well-formed DER


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


BAD_VERIFY = [
    # id, change to the signed directory, verify arguments, reason, fragments of the message
    ("missing-file", lambda d: (d / "model.onnx").unlink(), ["--key", "key.pub"], "FileUnreadable", ["model.onnx"]),
    ("missing-signature", lambda d: (d / "model.onnx.sig").unlink(), ["--key", "key.pub"], "SignatureMissing",
     ["model.onnx.sig"]),
    ("unreadable-key", lambda d: None, ["--key", "absent.pub"], "TrustKeyInvalid", ["absent.pub"]),
    ("key-not-pem", lambda d: (d / "key.pub").write_text("nope"), ["--key", "key.pub"], "TrustKeyInvalid",
     ["key.pub", "not a PEM public key"]),
    ("wrong-curve", lambda d: None, ["--key", "p384.pub"], "TrustKeyInvalid", ["p384.pub", "secp384r1 is not P-256"]),
    ("tampered-file", lambda d: _append(d / "model.onnx", b"!"), ["--key", "key.pub"], "SignatureInvalid",
     ["tried keys: key.pub ("]),
    ("tampered-signature", lambda d: _tamper_signature(d / "model.onnx.sig"), ["--key", "key.pub"],
     "SignatureInvalid", ["tried keys: key.pub ("]),
    ("garbage-signature", lambda d: (d / "model.onnx.sig").write_text("garbage!"), ["--key", "key.pub"],
     "SignatureMalformed", ["model.onnx.sig", "not base64"]),
    ("wrong-key", lambda d: None, ["--key", "another.pub"], "SignatureInvalid", ["tried keys: another.pub ("]),
    ("bundle-tampered-file", lambda d: _append(d / "model.onnx", b"!"), ["--key", "key.pub", "--bundle", "model.bundle"],
     "BundleDigestMismatch", ["model.bundle", "not this artifact"]),
    ("bundle-wrong-key", lambda d: None, ["--key", "another.pub", "--bundle", "model.bundle"], "SignatureInvalid",
     ["tried keys: another.pub ("]),
    ("bundle-for-keyless-only", lambda d: None, ["--identity", IDENTITY, "--issuer", ISSUER, "--bundle", "model.bundle"],
     "NoTrustedKeys", ["trusts no keys"]),
]


@pytest.mark.parametrize("change, args, reason, fragments", [b[1:] for b in BAD_VERIFY], ids=[b[0] for b in BAD_VERIFY])
def test_verify_refuses(signed: Path, change, args, reason, fragments, monkeypatch, capsys):
    change(signed)
    monkeypatch.chdir(signed)
    assert cli_main(["verify", "model.onnx", *args]) == 1
    err = capsys.readouterr().err
    assert f"reconciler: {reason}: " in err
    assert all(fragment in err for fragment in fragments), err


def test_verify_tries_every_key(signed: Path, monkeypatch, capsys):
    monkeypatch.chdir(signed)
    assert cli_main(["verify", "model.onnx", "--key", "another.pub", "--key", "key.pub"]) == 0
    assert "cosign signature by key key.pub (" in capsys.readouterr().out


def test_bad_verify_as_a_process_exits_1_naming_the_key(signed: Path):
    _append(signed / "model.onnx", b"!")
    done = run(["verify", "model.onnx", "--key", "key.pub"], signed)
    assert done.returncode == 1
    assert "SignatureInvalid" in done.stderr and "key.pub (" in done.stderr


BAD_SIGN = [
    ("missing-file", lambda d: None, ["absent.onnx", "--key", "demo.key"], "FileUnreadable", ["absent.onnx"]),
    ("unreadable-key", lambda d: None, ["model.onnx", "--key", "absent.key"], "SigningKeyInvalid", ["absent.key"]),
    ("wrong-curve", lambda d: (d / "p384.key").write_bytes(independent_seal(
        pkcs8_der(ec.generate_private_key(ec.SECP384R1())), PASSWORD)),
     ["model.onnx", "--key", "p384.key"], "SigningKeyInvalid", ["secp384r1 is not P-256"]),
    ("wrong-password", lambda d: (d / "other.key").write_bytes(independent_seal(pkcs8_der(trust.generate_private_key()),
                                                                                b"another password")),
     ["model.onnx", "--key", "other.key"], "KeyPasswordWrong", ["password"]),
]


@pytest.mark.parametrize("prepare, args, reason, fragments", [b[1:] for b in BAD_SIGN], ids=[b[0] for b in BAD_SIGN])
def test_sign_refuses(signed: Path, prepare, args, reason, fragments, monkeypatch, capsys):
    prepare(signed)
    shutil.copy(DEMO_KEYS / "demo.key", signed / "demo.key")
    monkeypatch.chdir(signed)
    monkeypatch.setenv(signing.PASSWORD_ENV, PASSWORD.decode())
    assert cli_main(["sign", *args]) == 1
    err = capsys.readouterr().err
    assert f"reconciler: {reason}: " in err
    assert all(fragment in err for fragment in fragments), err


@pytest.mark.parametrize(
    "args, message",
    [
        (["verify", "model.onnx"], "verify needs --key PUB, or --identity ID with --issuer URL"),
        (["verify", "model.onnx", "--identity", "me@example.com"], "--identity and --issuer go together"),
        (["verify", "model.onnx", "--key", "key.pub", "--issuer", "https://issuer"], "--identity and --issuer go together"),
    ],
    ids=["no-trust", "identity-without-issuer", "issuer-without-identity"],
)
def test_verify_usage_errors(signed: Path, args, message, monkeypatch, capsys):
    monkeypatch.chdir(signed)
    assert cli_main(args) == 2
    assert message in capsys.readouterr().err


def test_signature_and_bundle_are_exclusive(signed: Path, monkeypatch):
    monkeypatch.chdir(signed)
    with pytest.raises(SystemExit) as caught:
        cli_main(["verify", "model.onnx", "--key", "key.pub", "--signature", "a", "--bundle", "b"])
    assert caught.value.code == 2
