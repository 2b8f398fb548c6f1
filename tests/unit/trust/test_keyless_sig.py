"""Keyless cosign ``.sig`` signatures (simple-signing payload, Fulcio certificate and Rekor SET in
layer annotations, as ``cosign sign`` writes them) checked by ``trust.verify_payload_signature``
against a local Sigstore: what verifies, and every way one is refused."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta

import pytest

from reconciler import trust
from reconciler.devtools.trust_fixtures import IDENTITY, ISSUER, LocalSigstore, b64
from reconciler.errors import Stalled
from reconciler.trust import KeylessIdentity, TrustRoots

PAYLOAD = json.dumps({"critical": {"identity": {"docker-reference": "registry.example.com/models/resnet"},
                                   "image": {"docker-manifest-digest": "sha256:" + "ab" * 32},
                                   "type": "cosign container image signature"}, "optional": None}).encode()
OTHER_PAYLOAD = PAYLOAD.replace(b"ab", b"cd")
CI = KeylessIdentity(IDENTITY, ISSUER)
SIGNATURE, CERTIFICATE, CHAIN, BUNDLE = ("dev.cosignproject.cosign/signature", "dev.sigstore.cosign/certificate",
                                         "dev.sigstore.cosign/chain", "dev.sigstore.cosign/bundle")
Annotations = dict[str, str]


@pytest.fixture(scope="module")
def sigstore() -> LocalSigstore:
    return LocalSigstore()


@pytest.fixture(scope="module")
def roots(sigstore, tmp_path_factory) -> TrustRoots:
    root = sigstore.write_trusted_root(tmp_path_factory.mktemp("sigstore") / "trusted_root.json")
    return TrustRoots(identities=(CI,), sigstore_trusted_root=root)


def verify(annotations: Annotations, roots: TrustRoots, payload: bytes = PAYLOAD) -> trust.Verified:
    return trust.verify_payload_signature(payload, annotations[SIGNATURE].encode(), annotations.get(CERTIFICATE),
                                          annotations.get(BUNDLE), roots)


def test_keyless_sig_verifies(sigstore, roots):
    assert verify(sigstore.sign_cosign_payload(PAYLOAD), roots) == trust.Verified("cosign", identity=CI)


def test_the_chain_annotation_is_not_needed(sigstore, roots):
    """cosign v3.1's own ``.sig`` manifests carry no chain: the trusted root supplies the CAs."""
    annotations = sigstore.sign_cosign_payload(PAYLOAD)
    del annotations[CHAIN]
    assert verify(annotations, roots).identity == CI


def _rekor(change: Callable[[dict], None]) -> Callable[[Annotations], None]:
    def apply(annotations: Annotations) -> None:
        bundle = json.loads(annotations[BUNDLE])
        change(bundle)
        annotations[BUNDLE] = json.dumps(bundle)
    return apply


def _flip(value: str) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[len(raw) // 2] ^= 0x01
    return b64(bytes(raw))


def _set(key: str, value: object) -> Callable[[Annotations], None]:
    def apply(annotations: Annotations) -> None:
        if value is None:
            del annotations[key]
        else:
            annotations[key] = value  # type: ignore[assignment]
    return apply


def _payload_field(key: str, value: object) -> Callable[[dict], None]:
    return lambda bundle: bundle["Payload"].__setitem__(key, value)


def _log_of(other: LocalSigstore | None = None) -> Callable[[LocalSigstore, Annotations], None]:
    """The Rekor bundle of another signature (of ``other``'s log, else the same log)."""
    def apply(sigstore: LocalSigstore, annotations: Annotations) -> None:
        annotations[BUNDLE] = (other or sigstore).sign_cosign_payload(PAYLOAD)[BUNDLE]
    return apply


REFUSALS = [
    # id, signer (sigstore -> annotations), change, reason, fragment
    ("wrong-identity", lambda s: s.sign_cosign_payload(PAYLOAD, "https://git.example.com/fork/release.yml"), None,
     "CertificateIdentityMismatch", "certificate is for https://git.example.com/fork/release.yml"),
    ("wrong-issuer", lambda s: s.sign_cosign_payload(PAYLOAD, IDENTITY, "https://evil.example.com"), None,
     "CertificateIssuerMismatch", "https://evil.example.com"),
    ("signature-of-another-payload", lambda s: s.sign_cosign_payload(OTHER_PAYLOAD), None,
     "BundleVerificationFailed", "does not verify under the certificate's key"),
    ("tampered-set", None, _rekor(lambda b: b.__setitem__("SignedEntryTimestamp", _flip(b["SignedEntryTimestamp"]))),
     "BundleVerificationFailed", "signed entry timestamp does not hold"),
    ("integrated-time-moved", None, _rekor(_payload_field("integratedTime", 1)),
     "BundleVerificationFailed", "signed entry timestamp does not hold"),
    ("log-entry-of-another-signature", None, "another-entry", "BundleVerificationFailed", "another signature"),
    ("entry-in-an-untrusted-log", None, "untrusted-log", "BundleVerificationFailed", "signed entry timestamp"),
    ("certificate-outside-log-time", lambda s: s.sign_cosign_payload(PAYLOAD, valid_from=s.now + timedelta(hours=1)), None,
     "BundleVerificationFailed", "failed to build timestamp certificate chain"),
    ("certificate-from-another-ca-with-its-chain", "foreign-ca", None,
     "BundleVerificationFailed", "failed to build timestamp certificate chain"),
    ("sct-from-another-log", "foreign-ct", None, "BundleVerificationFailed", "SCT"),
    ("no-rekor-bundle", None, _set(BUNDLE, None), "SignatureFormatUnsupported", "no Rekor bundle"),
    ("rekor-bundle-not-json", None, _set(BUNDLE, "{"), "SignatureMalformed", "dev.sigstore.cosign/bundle"),
    ("rekor-bundle-index-not-a-number", None, _rekor(_payload_field("logIndex", "7")), "SignatureMalformed", "not an integer"),
    ("rekor-body-not-hashedrekord", None, _rekor(_payload_field("body", b64(b'{"kind":"dsse"}'))),
     "BundleVerificationFailed", "signed entry timestamp"),
    ("certificate-not-pem", None, _set(CERTIFICATE, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
     "SignatureMalformed", "not a PEM certificate"),
    ("signature-not-base64", None, _set(SIGNATURE, "not base64!"), "SignatureMalformed", "not base64"),
]


def _signed(sigstore: LocalSigstore, signer: object, change: object) -> Annotations:
    if signer == "foreign-ca":  # another Fulcio, whose CA rides along in the chain annotation
        annotations = LocalSigstore(now=sigstore.now, rekor_key=sigstore.rekor_key, ct_key=sigstore.ct_key).sign_cosign_payload(PAYLOAD)
    elif signer == "foreign-ct":
        annotations = LocalSigstore(now=sigstore.now, ca_key=sigstore.ca_key, rekor_key=sigstore.rekor_key).sign_cosign_payload(PAYLOAD)
    else:
        annotations = signer(sigstore) if callable(signer) else sigstore.sign_cosign_payload(PAYLOAD)
    if change == "another-entry":
        _log_of()(sigstore, annotations)
    elif change == "untrusted-log":
        _log_of(LocalSigstore(now=sigstore.now, ca_key=sigstore.ca_key, ct_key=sigstore.ct_key))(sigstore, annotations)
    elif callable(change):
        change(annotations)
    return annotations


@pytest.mark.parametrize("signer, change, reason, fragment", [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_keyless_sig_refused(sigstore, roots, signer, change, reason, fragment):
    with pytest.raises(Stalled) as caught:
        verify(_signed(sigstore, signer, change), roots)
    assert (caught.value.reason, fragment in caught.value.message) == (reason, True), caught.value.message


def test_a_site_trusting_no_identities_refuses_keyless(sigstore, roots):
    with pytest.raises(Stalled) as caught:
        verify(sigstore.sign_cosign_payload(PAYLOAD), TrustRoots(sigstore_trusted_root=roots.sigstore_trusted_root))
    assert caught.value.reason == "NoTrustedIdentities"


def test_a_key_signature_without_certificate_still_needs_a_trusted_key(sigstore, roots):
    """No certificate annotation: cosign's key form, checked against the site's keys (none here)."""
    annotations = sigstore.sign_cosign_payload(PAYLOAD)
    del annotations[CERTIFICATE]
    with pytest.raises(Stalled) as caught:
        verify(annotations, roots)
    assert caught.value.reason == "NoTrustedKeys"
