"""Sigstore bundles (key-signed and keyless), DSSE in-toto statements, model_signing manifests,
format detection and narrowing of trust roots. Bundles are built from the documented JSON shapes
in reconciler/devtools/trust_fixtures.py; keyless ones come from a local Sigstore (own CA, CT log
and Rekor keys)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sigstore as sigstore_package
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler import trust
from reconciler.devtools.trust_fixtures import (
    BUNDLE_V03,
    IDENTITY,
    ISSUER,
    MEDIA_TYPES,
    LocalSigstore,
    attest_statement,
    b64,
    cosign_hint,
    dsse_bundle,
    encode,
    message_bundle,
    model_signing_hint,
    model_signing_statement,
)
from reconciler.errors import Stalled
from reconciler.trust import KeylessIdentity, TrustRoots

BLOB = b"onnx model bytes \x00\x01" * 500
DIGEST = hashlib.sha256(BLOB).digest()
OTHER_BLOB = b"another model"
NAME = "model.onnx"


@pytest.fixture(scope="module")
def signer() -> ec.EllipticCurvePrivateKey:
    return trust.generate_private_key()


@pytest.fixture(scope="module")
def stranger() -> ec.EllipticCurvePrivateKey:
    return trust.generate_private_key()


def trusted(key: ec.EllipticCurvePrivateKey, name: str = "release.pub") -> trust.TrustedKey:
    return trust.load_public_key(trust.public_key_pem(key), name)


def verify(bundle: dict[str, Any] | bytes, roots: TrustRoots, signature_format=None, digest: bytes = DIGEST,
           name: str = NAME) -> trust.Verified:
    raw = bundle if isinstance(bundle, bytes) else encode(bundle)
    return trust.verify_artifact_signature(digest, name, raw, signature_format, roots)


def refused(bundle: dict[str, Any] | bytes, roots: TrustRoots, **options: Any) -> Stalled:
    with pytest.raises(Stalled) as caught:
        verify(bundle, roots, **options)
    return caught.value


# --- key-signed message bundles (cosign sign-blob --key --bundle) -------------------------------------

@pytest.mark.parametrize("media_type", MEDIA_TYPES)
@pytest.mark.parametrize("hint", ["cosign", None, "not-a-known-hint"], ids=["cosign-hint", "no-hint", "unknown-hint"])
def test_message_bundle_verifies(signer, media_type, hint):
    key = trusted(signer)
    verified = verify(message_bundle(signer, BLOB, media_type=media_type, hint=hint), TrustRoots(keys=(key,)))
    assert verified == trust.Verified("sigstore-bundle", key=key)
    assert verified.by == f"key {key}"


def test_hint_picks_the_key_among_several(signer, stranger):
    keys = (trusted(stranger, "old.pub"), trusted(signer, "release.pub"))
    assert verify(message_bundle(signer, BLOB), TrustRoots(keys=keys)).key is keys[1]


@pytest.mark.parametrize("declared", [None, "sigstore-bundle"])
def test_tlog_entries_of_key_bundles_are_not_required(signer, declared):
    bundle = message_bundle(signer, BLOB)
    bundle["verificationMaterial"]["tlogEntries"] = [{"logIndex": "1", "kindVersion": {"kind": "hashedrekord"}}]
    assert verify(bundle, TrustRoots(keys=(trusted(signer),)), signature_format=declared).key is not None


def _locate(bundle: dict[str, Any], path: str) -> tuple[Any, Any]:
    """The container and key of the field at a dotted path (numbers index lists)."""
    node: Any = bundle
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, int(last) if isinstance(node, list) else last


def _with(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set (or with value ... delete) the field at a dotted path of a bundle."""
    def change(bundle: dict[str, Any]) -> None:
        node, key = _locate(bundle, path)
        if value is ...:
            del node[key]
        else:
            node[key] = value
    return change


MESSAGE_REFUSALS = [
    # id, change to a good bundle, digest checked, reason, fragment
    ("tampered-artifact", None, hashlib.sha256(BLOB + b"!").digest(), "BundleDigestMismatch", "not this artifact"),
    ("tampered-artifact-no-message-digest", _with("messageSignature.messageDigest", ...),
     hashlib.sha256(BLOB + b"!").digest(), "SignatureInvalid", "tried keys: release.pub ("),
    ("bundle-for-another-artifact", "other", DIGEST, "BundleDigestMismatch",
     f"signs sha256:{hashlib.sha256(OTHER_BLOB).hexdigest()}"),
    ("message-digest-rewritten", _with("messageSignature.messageDigest.digest", b64(hashlib.sha256(b"x").digest())),
     DIGEST, "BundleDigestMismatch", "not this artifact"),
    ("message-digest-sha384", _with("messageSignature.messageDigest.algorithm", "SHA2_384"), DIGEST,
     "SignatureFormatUnsupported", "SHA2_384"),
    ("message-digest-not-base64", _with("messageSignature.messageDigest.digest", "%%%"), DIGEST,
     "SignatureMalformed", "not base64"),
    ("message-digest-not-object", _with("messageSignature.messageDigest", "sha256:abc"), DIGEST,
     "SignatureMalformed", "messageDigest is not an object"),
    ("tampered-signature", "flip-signature", DIGEST, "SignatureInvalid", "none of the trusted keys"),
    ("wrong-key", "stranger", DIGEST, "SignatureInvalid", "tried keys: release.pub ("),
    ("signature-not-der", _with("messageSignature.signature", b64(b"\x01" * 64)), DIGEST,
     "SignatureMalformed", "not an ASN.1 DER"),
    ("signature-missing", _with("messageSignature.signature", ...), DIGEST, "SignatureMalformed", "no signature string"),
    ("unknown-media-type", _with("mediaType", "application/vnd.dev.sigstore.bundle+json;version=9"), DIGEST,
     "SignatureFormatUnsupported", "version=9"),
    ("no-media-type", _with("mediaType", ...), DIGEST, "SignatureFormatUnsupported", "mediaType None"),
    ("no-verification-material", _with("verificationMaterial", ...), DIGEST, "SignatureMalformed",
     "no verificationMaterial"),
    ("neither-key-nor-certificate", _with("verificationMaterial.publicKey", ...), DIGEST, "SignatureMalformed",
     "neither a publicKey nor a certificate"),
    ("no-content", _with("messageSignature", ...), DIGEST, "SignatureMalformed", "exactly one of"),
    ("both-contents", _with("dsseEnvelope", {"payload": "", "payloadType": "x", "signatures": []}), DIGEST,
     "SignatureMalformed", "exactly one of"),
    ("content-not-object", _with("messageSignature", []), DIGEST, "SignatureMalformed", "no messageSignature object"),
]


@pytest.mark.parametrize("change, digest, reason, fragment", [c[1:] for c in MESSAGE_REFUSALS],
                         ids=[c[0] for c in MESSAGE_REFUSALS])
def test_message_bundle_refused(signer, stranger, change, digest, reason, fragment):
    bundle = message_bundle(signer, BLOB)
    if change == "other":
        bundle = message_bundle(signer, OTHER_BLOB)
    elif change == "stranger":
        bundle = message_bundle(stranger, BLOB)
    elif change == "flip-signature":
        der = bytearray(base64.b64decode(bundle["messageSignature"]["signature"]))
        der[-1] ^= 0x01
        bundle["messageSignature"]["signature"] = b64(bytes(der))
    elif change is not None:
        change(bundle)
    error = refused(bundle, TrustRoots(keys=(trusted(signer),)), digest=digest)
    assert (error.reason, fragment in error.message) == (reason, True), error.message


@pytest.mark.parametrize(
    "raw, reason, fragment",
    [
        (b"{not json", "SignatureMalformed", "not JSON"),
        (b"[1, 2]", "SignatureMalformed", "not a JSON object"),
        (b"\xff\xfe{", "SignatureMalformed", "not JSON"),
        (b"{}", "SignatureFormatUnsupported", "mediaType None"),
        (b'{"mediaType": "application/json"}', "SignatureFormatUnsupported", "'application/json'"),
    ],
    ids=["truncated", "array", "not-utf8", "empty-object", "other-media-type"],
)
def test_malformed_bundle_refused(signer, raw, reason, fragment):
    error = refused(raw, TrustRoots(keys=(trusted(signer),)), signature_format="sigstore-bundle")
    assert error.reason == reason and fragment in error.message


def test_key_bundle_without_trusted_keys(signer):
    identities = (KeylessIdentity(IDENTITY, ISSUER),)
    error = refused(message_bundle(signer, BLOB), TrustRoots(identities=identities))
    assert error.reason == "NoTrustedKeys"


def test_declared_format_must_fit_the_content(signer):
    roots = TrustRoots(keys=(trusted(signer),))
    error = refused(message_bundle(signer, BLOB), roots, signature_format="model-signing")
    assert error.reason == "SignatureFormatUnsupported" and "no DSSE statement" in error.message
    error = refused(trust.sign_digest(signer, DIGEST), roots, signature_format="sigstore-bundle")
    assert error.reason == "SignatureMalformed" and "not JSON" in error.message


# --- key-signed DSSE bundles (cosign attest-blob --key, model_signing with a key) -------------------

@pytest.mark.parametrize(
    "statement, expected_format",
    [
        (attest_statement({NAME: BLOB}), "sigstore-bundle"),
        (attest_statement({"other.bin": OTHER_BLOB, "renamed.onnx": BLOB}), "sigstore-bundle"),
        (attest_statement({NAME: BLOB}, statement_type="https://in-toto.io/Statement/v0.1"), "sigstore-bundle"),
        (model_signing_statement({NAME: BLOB, "config.json": b"{}"}), "model-signing"),
    ],
    ids=["subject", "digest-under-another-name", "statement-v0.1", "model-signing-resource"],
)
def test_dsse_bundle_verifies(signer, statement, expected_format):
    key = trusted(signer)
    assert verify(dsse_bundle(signer, statement), TrustRoots(keys=(key,))) == trust.Verified(expected_format, key=key)


def test_model_signing_declared_and_detected(signer):
    bundle = encode(dsse_bundle(signer, model_signing_statement({NAME: BLOB})))
    assert trust.detect_format(bundle) == "model-signing"
    assert verify(bundle, TrustRoots(keys=(trusted(signer),)), signature_format="model-signing").format == "model-signing"


def _payload(bundle: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def _set_payload(bundle: dict[str, Any], statement: dict[str, Any] | bytes) -> None:
    raw = statement if isinstance(statement, bytes) else json.dumps(statement).encode()
    bundle["dsseEnvelope"]["payload"] = b64(raw)


def _tamper_payload(bundle: dict[str, Any]) -> None:
    statement = _payload(bundle)
    statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(b"evil").hexdigest()
    _set_payload(bundle, statement)


DSSE_REFUSALS = [
    # id, statement signed, change after signing, declared format, reason, fragment
    ("statement-missing-the-file", attest_statement({"other.bin": OTHER_BLOB}), None, None,
     "StatementMissingFile", f"DSSE statement does not list {NAME} (sha256:{DIGEST.hex()}); it lists other.bin"),
    ("subject-named-with-other-digest", attest_statement({NAME: OTHER_BLOB}), None, None,
     "BundleDigestMismatch", f"lists {NAME} as sha256:{hashlib.sha256(OTHER_BLOB).hexdigest()}"),
    ("model-signing-missing-the-file", model_signing_statement({"weights.bin": BLOB, "config.json": b"{}"}), None, None,
     "StatementMissingFile", f"DSSE statement does not list {NAME}; it lists config.json, weights.bin"),
    ("model-signing-other-digest", model_signing_statement({NAME: OTHER_BLOB}), None, "model-signing",
     "BundleDigestMismatch", "not this artifact"),
    ("model-signing-blake2", model_signing_statement({NAME: BLOB}, algorithm="blake2"), None, None,
     "SignatureFormatUnsupported", "'blake2'"),
    ("model-signing-declared-other-predicate", attest_statement({NAME: BLOB}), None, "model-signing",
     "SignatureFormatUnsupported", "predicateType is 'https://slsa.dev/provenance/v1'"),
    ("payload-tampered", attest_statement({NAME: BLOB}), _tamper_payload, None,
     "SignatureInvalid", "tried keys: release.pub ("),
    ("payload-type-changed", attest_statement({NAME: BLOB}), _with("dsseEnvelope.payloadType", "text/plain"), None,
     "SignatureInvalid", "none of the trusted keys"),
    ("no-signatures", attest_statement({NAME: BLOB}), _with("dsseEnvelope.signatures", []), None,
     "SignatureMalformed", "no signatures"),
    ("signature-not-object", attest_statement({NAME: BLOB}), _with("dsseEnvelope.signatures", ["abc"]), None,
     "SignatureMalformed", "not an object"),
    ("signature-not-base64", attest_statement({NAME: BLOB}), _with("dsseEnvelope.signatures.0.sig", "!!"), None,
     "SignatureMalformed", "not base64"),
    ("payload-not-base64", attest_statement({NAME: BLOB}), _with("dsseEnvelope.payload", "***"), None,
     "SignatureMalformed", "payload is not base64"),
    ("no-payload-type", attest_statement({NAME: BLOB}), _with("dsseEnvelope.payloadType", ...), None,
     "SignatureMalformed", "no payloadType string"),
]


@pytest.mark.parametrize("statement, change, declared, reason, fragment", [c[1:] for c in DSSE_REFUSALS],
                         ids=[c[0] for c in DSSE_REFUSALS])
def test_dsse_bundle_refused(signer, statement, change, declared, reason, fragment):
    bundle = dsse_bundle(signer, statement)
    if change is not None:
        change(bundle)
    error = refused(bundle, TrustRoots(keys=(trusted(signer),)), signature_format=declared)
    assert (error.reason, fragment in error.message) == (reason, True), error.message


@pytest.mark.parametrize(
    "payload_type, payload, reason, fragment",
    [
        ("text/plain", json.dumps(attest_statement({NAME: BLOB})).encode(), "SignatureFormatUnsupported",
         "payloadType is 'text/plain'"),
        ("application/vnd.in-toto+json", b"not json", "SignatureMalformed", "payload is not JSON"),
        ("application/vnd.in-toto+json", b'{"_type": "something else"}', "SignatureMalformed", "not an in-toto Statement"),
        ("application/vnd.in-toto+json", json.dumps({"_type": "https://in-toto.io/Statement/v1", "subject": "x"}).encode(),
         "SignatureMalformed", "subject is not a list"),
        ("application/vnd.in-toto+json",
         json.dumps({"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://model_signing/signature/v1.0",
                     "predicate": {"resources": {"model.onnx": "abc"}}}).encode(),
         "SignatureMalformed", "predicate.resources is not a list"),
    ],
    ids=["wrong-payload-type", "payload-not-json", "not-a-statement", "subjects-not-list", "resources-not-list"],
)
def test_signed_but_unusable_statement_refused(signer, payload_type, payload, reason, fragment):
    """Signed correctly, so only what the statement says can be wrong."""
    bundle = dsse_bundle(signer, payload, payload_type=payload_type)
    error = refused(bundle, TrustRoots(keys=(trusted(signer),)))
    assert (error.reason, fragment in error.message) == (reason, True), error.message


# --- format detection -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "content, expected",
    [
        (lambda s: trust.sign_digest(s, DIGEST), "cosign"),
        (lambda s: b"garbage", "cosign"),
        (lambda s: encode(message_bundle(s, BLOB)), "sigstore-bundle"),
        (lambda s: b"  \n" + encode(dsse_bundle(s, attest_statement({NAME: BLOB}))), "sigstore-bundle"),
        (lambda s: encode(dsse_bundle(s, model_signing_statement({NAME: BLOB}))), "model-signing"),
        (lambda s: b'{"mediaType": "x"}', "sigstore-bundle"),
        (lambda s: b"{broken", "sigstore-bundle"),
    ],
    ids=["cosign-sig", "not-json", "message-bundle", "dsse-bundle", "model-signing", "unknown-json", "broken-json"],
)
def test_detect_format(signer, content, expected):
    assert trust.detect_format(content(signer)) == expected


def test_undeclared_cosign_signature_still_verifies(signer):
    key = trusted(signer)
    verified = verify(trust.sign_digest(signer, DIGEST), TrustRoots(keys=(key,)))
    assert verified == trust.Verified("cosign", key=key)
    assert str(verified) == f"cosign signature by key {key}"


def test_first_api_still_answers_with_the_key(signer):
    key = trusted(signer)
    assert trust.verify_signature(DIGEST, encode(message_bundle(signer, BLOB)), None, [key]) == key


def test_key_hints_match_what_signers_write(signer):
    key = trusted(signer)
    assert {cosign_hint(signer), model_signing_hint(signer), key.key_id} == key.hints


# --- narrowing --------------------------------------------------------------------------------------

CI = KeylessIdentity(IDENTITY, ISSUER)
PERSON = KeylessIdentity("alice@example.com", "https://accounts.example.com")


@pytest.mark.parametrize(
    "identities, keys, expected_keys, expected_identities",
    [
        (None, None, ["release.pub", "backup.pub"], [CI, PERSON]),
        ([IDENTITY], None, [], [CI]),
        (None, ["release.pub"], ["release.pub"], []),
        (["alice@example.com", "mallory@example.com"], ["backup.pub", "unknown.pub"], ["backup.pub"], [PERSON]),
        ([], ["release.pub"], ["release.pub"], []),
    ],
    ids=["unchanged", "only-ci", "only-release-key", "intersection", "empty-identities"],
)
def test_narrow(signer, stranger, identities, keys, expected_keys, expected_identities):
    roots = TrustRoots(keys=(trusted(signer, "release.pub"), trusted(stranger, "backup.pub")),
                       identities=(CI, PERSON), sigstore_trusted_root=Path("root.json"))
    narrowed = trust.narrow(roots, identities, keys)
    assert [k.name for k in narrowed.keys] == expected_keys
    assert list(narrowed.identities) == expected_identities
    assert narrowed.sigstore_trusted_root == Path("root.json")


def test_narrow_by_key_id(signer, stranger):
    release, backup = trusted(signer, "release.pub"), trusted(stranger, "backup.pub")
    roots = TrustRoots(keys=(release, backup))
    assert trust.narrow(roots, None, [backup.key_id]).keys == (backup,)
    assert trust.narrow(roots, None, [release.key_id[:16]]).keys == (release,)


@pytest.mark.parametrize(
    "identities, keys",
    [(["mallory@example.com"], None), (None, ["unknown.pub"]), ([], []), (["alice@example.com"], [])],
    ids=["unknown-identity", "unknown-key", "nobody", "identity-the-site-lacks"],
)
def test_narrow_never_widens(signer, identities, keys):
    roots = TrustRoots(keys=(trusted(signer, "release.pub"),), identities=(CI,))
    with pytest.raises(Stalled) as caught:
        trust.narrow(roots, identities, keys)
    assert caught.value.reason == "NoTrustedSigners"
    assert "release.pub (" in caught.value.message and IDENTITY in caught.value.message


def test_narrowed_roots_refuse_a_signer_the_version_excludes(signer, stranger):
    roots = trust.narrow(TrustRoots(keys=(trusted(signer, "release.pub"), trusted(stranger, "backup.pub"))),
                         None, ["backup.pub"])
    error = refused(message_bundle(signer, BLOB), roots)
    assert error.reason == "SignatureInvalid" and "backup.pub (" in error.message and "release.pub" not in error.message


# --- keyless bundles against a local Sigstore ---------------------------------------------------------

@pytest.fixture(scope="module")
def sigstore() -> LocalSigstore:
    return LocalSigstore()


@pytest.fixture(scope="module")
def keyless_roots(sigstore, tmp_path_factory) -> TrustRoots:
    root = sigstore.write_trusted_root(tmp_path_factory.mktemp("sigstore") / "trusted_root.json")
    return TrustRoots(identities=(PERSON, CI), sigstore_trusted_root=root)


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_keyless_message_bundle_verifies(sigstore, keyless_roots, media_type):
    verified = verify(sigstore.sign_blob(BLOB, media_type=media_type), keyless_roots)
    assert verified == trust.Verified("sigstore-bundle", identity=CI)
    assert verified.by == f"identity {IDENTITY} (issuer {ISSUER})"


@pytest.mark.parametrize("extensions", [("v2",), ("v1",)], ids=["new-extension-only", "old-extension-only"])
def test_keyless_issuer_in_either_extension(sigstore, keyless_roots, extensions):
    assert verify(sigstore.sign_blob(BLOB, issuer_extensions=extensions), keyless_roots).identity == CI
    wrong = sigstore.sign_blob(BLOB, IDENTITY, "https://evil.example.com", issuer_extensions=extensions)
    error = refused(wrong, keyless_roots)
    assert error.reason == "CertificateIssuerMismatch" and "https://evil.example.com" in error.message


def test_keyless_long_issuer_in_new_extension(sigstore, keyless_roots):
    """Over 127 bytes the DER length takes the long form."""
    issuer = "https://issuer.example.com/" + "tenant/" * 30
    roots = TrustRoots(identities=(KeylessIdentity(IDENTITY, issuer),), sigstore_trusted_root=keyless_roots.sigstore_trusted_root)
    assert verify(sigstore.sign_blob(BLOB, IDENTITY, issuer, issuer_extensions=("v2",)), roots).identity.issuer == issuer


def test_keyless_certificate_without_issuer(sigstore, keyless_roots):
    error = refused(sigstore.sign_blob(BLOB, issuer_extensions=()), keyless_roots)
    assert error.reason == "CertificateIssuerMismatch" and "OIDC issuer unknown" in error.message


def test_keyless_email_identity_verifies(sigstore, keyless_roots):
    bundle = sigstore.sign_blob(BLOB, PERSON.identity, PERSON.issuer, email=True)
    assert verify(bundle, keyless_roots).identity == PERSON


@pytest.mark.parametrize(
    "statement, expected_format",
    [(attest_statement({NAME: BLOB}), "sigstore-bundle"), (model_signing_statement({NAME: BLOB}), "model-signing")],
    ids=["attest-blob", "model-signing"],
)
def test_keyless_dsse_bundle_verifies(sigstore, keyless_roots, statement, expected_format):
    assert verify(sigstore.sign_statement(statement), keyless_roots) == trust.Verified(expected_format, identity=CI)


def _entry(bundle: dict[str, Any]) -> dict[str, Any]:
    return bundle["verificationMaterial"]["tlogEntries"][0]


def _flip_base64(value: str) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[len(raw) // 2] ^= 0x01
    return b64(bytes(raw))


def _tamper(path: str) -> Callable[[dict[str, Any]], None]:
    """Flip one bit of the base64 value at a dotted path."""
    def change(bundle: dict[str, Any]) -> None:
        node, key = _locate(bundle, path)
        node[key] = _flip_base64(node[key])
    return change


def _replace_checkpoint_root(bundle: dict[str, Any]) -> None:
    proof = _entry(bundle)["inclusionProof"]
    proof["checkpoint"]["envelope"] = proof["checkpoint"]["envelope"].replace(proof["rootHash"], b64(b"\x00" * 32))


KEYLESS_REFUSALS = [
    # id, bundle maker (sigstore) -> bundle, reason, fragment
    ("wrong-identity", lambda s: s.sign_blob(BLOB, "https://git.example.com/fork/workflow.yml", ISSUER),
     "CertificateIdentityMismatch", f"certificate is for https://git.example.com/fork/workflow.yml; tried identities: "
                                    f"{PERSON}, {CI}"),
    ("wrong-issuer", lambda s: s.sign_blob(BLOB, IDENTITY, "https://evil.example.com"),
     "CertificateIssuerMismatch", f"OIDC issuer https://evil.example.com; tried identities: {CI}"),
    ("bundle-for-another-artifact", lambda s: s.sign_blob(OTHER_BLOB), "BundleDigestMismatch", "not this artifact"),
    ("dsse-missing-the-file", lambda s: s.sign_statement(attest_statement({"other.bin": OTHER_BLOB})),
     "StatementMissingFile", f"does not list {NAME}"),
    ("tampered-signature", lambda s: _changed(s.sign_blob(BLOB), _tamper("messageSignature.signature")),
     "BundleVerificationFailed", "Signature is invalid"),
    ("tampered-set", lambda s: _changed(s.sign_blob(BLOB), lambda b: _tamper("inclusionPromise.signedEntryTimestamp")(_entry(b))),
     "BundleVerificationFailed", "invalid inclusion promise"),
    ("tampered-inclusion-proof", lambda s: _changed(s.sign_blob(BLOB), lambda b: _tamper("inclusionProof.hashes.0")(_entry(b))),
     "BundleVerificationFailed", "invalid root hash"),
    ("checkpoint-for-another-tree", lambda s: _changed(s.sign_blob(BLOB), _replace_checkpoint_root),
     "BundleVerificationFailed", "checkpoint: invalid signature"),
    ("log-body-of-another-signature", lambda s: _swap_log_entry(s.sign_blob(BLOB), s.sign_blob(BLOB)),
     "BundleVerificationFailed", "inconsistent with other materials"),
    ("certificate-outside-log-time", lambda s: s.sign_blob(BLOB, valid_from=s.now + timedelta(hours=1)),
     "BundleVerificationFailed", "failed to build timestamp certificate chain"),
    ("certificate-from-another-ca", lambda s: LocalSigstore(now=s.now, rekor_key=s.rekor_key, ct_key=s.ct_key).sign_blob(BLOB),
     "BundleVerificationFailed", "failed to build timestamp certificate chain"),
    ("sct-from-another-log", lambda s: LocalSigstore(now=s.now, ca_key=s.ca_key, rekor_key=s.rekor_key).sign_blob(BLOB),
     "BundleVerificationFailed", "SCT"),
    ("entry-in-another-log", lambda s: LocalSigstore(now=s.now, ca_key=s.ca_key, ct_key=s.ct_key).sign_blob(BLOB),
     "BundleVerificationFailed", "invalid log entry"),
    ("no-tlog-entry", lambda s: _changed(s.sign_blob(BLOB), _with("verificationMaterial.tlogEntries", [])),
     "SignatureMalformed", "exactly one log entry"),
    ("certificate-not-der", lambda s: _changed(s.sign_blob(BLOB), _with("verificationMaterial.certificate.rawBytes", b64(b"x"))),
     "SignatureMalformed", "keyless bundle is not valid"),
]


def _changed(bundle: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    change(bundle)
    return bundle


def _swap_log_entry(bundle: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    swapped = copy.deepcopy(bundle)
    swapped["verificationMaterial"]["tlogEntries"] = other["verificationMaterial"]["tlogEntries"]
    return swapped


@pytest.mark.parametrize("make, reason, fragment", [c[1:] for c in KEYLESS_REFUSALS], ids=[c[0] for c in KEYLESS_REFUSALS])
def test_keyless_bundle_refused(sigstore, keyless_roots, make, reason, fragment):
    error = refused(make(sigstore), keyless_roots)
    assert (error.reason, fragment in error.message) == (reason, True), error.message


def test_keyless_bundle_refused_under_another_root(sigstore, tmp_path):
    other_root = LocalSigstore().write_trusted_root(tmp_path / "other.json")
    error = refused(sigstore.sign_blob(BLOB), TrustRoots(identities=(CI,), sigstore_trusted_root=other_root))
    assert error.reason == "BundleVerificationFailed" and str(other_root) in error.message


def test_keyless_bundle_refused_by_the_production_root(sigstore):
    """No trusted_root configured: the production root shipped with sigstore, read offline."""
    error = refused(sigstore.sign_blob(BLOB), TrustRoots(identities=(CI,)))
    assert error.reason == "BundleVerificationFailed" and "production root" in error.message


def test_keyless_bundle_without_trusted_identities(sigstore, signer):
    error = refused(sigstore.sign_blob(BLOB), TrustRoots(keys=(trusted(signer),)))
    assert error.reason == "NoTrustedIdentities"


@pytest.mark.parametrize("content", [b"not json at all {", b'{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}'],
                         ids=["not-json", "no-logs"])
def test_unreadable_trusted_root(sigstore, tmp_path, content):
    path = tmp_path / "root.json"
    path.write_bytes(content)
    error = refused(sigstore.sign_blob(BLOB), TrustRoots(identities=(CI,), sigstore_trusted_root=path))
    assert error.reason == "TrustRootInvalid" and str(path) in error.message


def test_missing_trusted_root(sigstore, tmp_path):
    error = refused(sigstore.sign_blob(BLOB), TrustRoots(identities=(CI,), sigstore_trusted_root=tmp_path / "absent.json"))
    assert error.reason == "TrustRootInvalid"


def test_keyless_bundle_detected_and_keys_ignored(sigstore, keyless_roots, signer):
    """A keyless bundle is judged by identities only, even when the site also trusts keys."""
    bundle = encode(sigstore.sign_blob(BLOB))
    assert trust.detect_format(bundle) == "sigstore-bundle"
    roots = TrustRoots(keys=(trusted(signer),), identities=keyless_roots.identities,
                       sigstore_trusted_root=keyless_roots.sigstore_trusted_root)
    assert verify(bundle, roots).identity == CI


def test_keyless_message_digest_is_optional(sigstore, keyless_roots):
    bundle = sigstore.sign_blob(BLOB)
    del bundle["messageSignature"]["messageDigest"]
    assert verify(bundle, keyless_roots).identity == CI


def test_keyless_bundle_v03_alias_uses_single_certificate(sigstore, keyless_roots):
    bundle = sigstore.sign_blob(BLOB, media_type=BUNDLE_V03)
    assert "certificate" in bundle["verificationMaterial"]
    assert verify(bundle, keyless_roots).identity == CI


# --- a real bundle from the public Sigstore staging instance -------------------------------------------

STAGING_BUNDLE = (Path(__file__).resolve().parents[2] / "data" / "trust" / "staging-keyless.sigstore.json").read_bytes()
STAGING_DIGEST = bytes.fromhex("5e6ae9de58c1177bea615b4fcbfb2fd688e8c4b51c2e56b6a38e817833ec24a2")
STAGING_SIGNER = KeylessIdentity("william@yossarian.net", "https://github.com/login/oauth")


@pytest.fixture(scope="module")
def staging_root() -> Path:
    """The staging trusted root that the sigstore package ships beside the production one."""
    return Path(sigstore_package.__file__).parent / "_store" / "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev" / "trusted_root.json"


def test_real_staging_bundle_verifies_offline(staging_root):
    roots = TrustRoots(identities=(PERSON, STAGING_SIGNER), sigstore_trusted_root=staging_root)
    assert verify(STAGING_BUNDLE, roots, digest=STAGING_DIGEST) == trust.Verified("sigstore-bundle", identity=STAGING_SIGNER)


@pytest.mark.parametrize(
    "roots, digest, reason",
    [
        (lambda root: TrustRoots(identities=(STAGING_SIGNER,)), STAGING_DIGEST, "BundleVerificationFailed"),
        (lambda root: TrustRoots(identities=(KeylessIdentity(STAGING_SIGNER.identity, "https://accounts.google.com"),),
                                 sigstore_trusted_root=root), STAGING_DIGEST, "CertificateIssuerMismatch"),
        (lambda root: TrustRoots(identities=(PERSON,), sigstore_trusted_root=root), STAGING_DIGEST,
         "CertificateIdentityMismatch"),
        (lambda root: TrustRoots(identities=(STAGING_SIGNER,), sigstore_trusted_root=root), DIGEST, "BundleDigestMismatch"),
    ],
    ids=["production-root", "other-issuer", "other-identity", "other-artifact"],
)
def test_real_staging_bundle_refused(staging_root, roots, digest, reason):
    assert refused(STAGING_BUNDLE, roots(staging_root), digest=digest).reason == reason


def test_real_staging_bundle_with_tampered_log_body_refused(staging_root):
    bundle = json.loads(STAGING_BUNDLE)
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
    body["spec"]["data"]["hash"]["value"] = hashlib.sha256(b"other").hexdigest()
    entry["canonicalizedBody"] = b64(json.dumps(body, separators=(",", ":")).encode())
    error = refused(bundle, TrustRoots(identities=(STAGING_SIGNER,), sigstore_trusted_root=staging_root), digest=STAGING_DIGEST)
    assert error.reason == "BundleVerificationFailed" and "invalid log entry" in error.message
