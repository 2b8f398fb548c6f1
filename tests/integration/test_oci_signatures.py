"""Signatures found in the registry (``signature: {format: registry}``): an artifact pushed as
``oras push`` writes it and signed as ``cosign sign --key`` writes it (the legacy ``.sig`` tag, and
cosign v3's Sigstore bundle as a referrer through the fallback tag) in Debian's registry; the
referrers API and a keyless bundle from the strict fake. Checked against the site's trust roots by
the same functions as file signatures; a signature of another manifest, by an untrusted key, or
none at all is refused."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from oci_cosign import attach_bundle, key_bundle, sign_legacy
from oci_fake import FakeRegistry, fake_registry

from reconciler.devtools.ociregistry import (
    EMPTY_CONFIG,
    Registry,
    digest_of,
    registry_missing,
    running_registry,
)
from reconciler.devtools.trust_fixtures import IDENTITY, ISSUER, LocalSigstore, message_bundle
from reconciler.errors import ReconcilerError
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.ingest.verification import signature_bytes, verified_artifact
from reconciler.manifests.models import Artifact
from reconciler.settings import FetchLimits
from reconciler.trust import KeylessIdentity, TrustRoots, load_public_key, public_key_pem

pytestmark = pytest.mark.skipif(registry_missing() is not None, reason=str(registry_missing()))

MODEL = os.urandom(100_000)
KEY = ec.generate_private_key(ec.SECP256R1())
STRANGER = ec.generate_private_key(ec.SECP256R1())
ROOTS = TrustRoots(keys=(load_public_key(public_key_pem(KEY), "release.pub"),))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("signatures"), "none") as running:
        yield running


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    with fake_registry() as running:
        yield running


def pushers(registry: Registry, repository: str):
    def put_manifest(reference: str | None, manifest: dict, media_type: str) -> str:
        body = json.dumps(manifest, separators=(",", ":")).encode()
        return registry.push_manifest(repository, reference or digest_of(body), manifest, media_type)
    return (lambda data: registry.push_blob(repository, data)), put_manifest


def fake_pushers(fake: FakeRegistry):
    return fake.put_blob, lambda reference, manifest, media_type: fake.put_manifest(reference, manifest)


def signed_artifact(host: str, repository: str, tag: str, data: bytes = MODEL) -> Artifact:
    uri = f"oci://{host}/{repository}:{tag}"
    return Artifact(uri=uri, digest=digest_of(data), size=len(data), signature={"uri": uri, "format": "registry"})


def limits(host: str) -> FetchLimits:
    return FetchLimits(retries=1, oci={"plain_http": [host]})


def verify(item: Artifact, host: str, tmp_path: Path, roots: TrustRoots = ROOTS):
    return verified_artifact(ArtifactStore(tmp_path / "state"), item, None, roots, None, limits(host))


def refused(item: Artifact, host: str, tmp_path: Path, reason: str, words: str, roots: TrustRoots = ROOTS) -> None:
    with pytest.raises(ReconcilerError) as caught:
        verify(item, host, tmp_path, roots)
    assert caught.value.reason == reason, caught.value
    assert words in str(caught.value)


def manifest_size(registry: Registry, repository: str, digest: str) -> int:
    status, _, body = registry._call("GET", f"/v2/{repository}/manifests/{digest}", repository, b"",
                                     {"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 200
    return len(body)


def test_an_oras_artifact_signed_by_cosign_sign_key_legacy_tag(registry: Registry, tmp_path: Path) -> None:
    signed = registry.push_file("models/legacy", "1.0", MODEL)
    sign_legacy(*pushers(registry, "models/legacy"), KEY, f"{registry.host}/models/legacy", signed)
    item = signed_artifact(registry.host, "models/legacy", "1.0")
    assert verify(item, registry.host, tmp_path).path.read_bytes() == MODEL
    assert signature_bytes(item, None, limits(registry.host)) == b""  # found, for validate without roots


def test_a_keyless_cosign_sig_tag(registry: Registry, tmp_path: Path) -> None:
    """``cosign sign`` keyless, legacy tag: certificate, chain and Rekor bundle as layer annotations."""
    sigstore = LocalSigstore()
    roots = TrustRoots(identities=(KeylessIdentity(IDENTITY, ISSUER),),
                       sigstore_trusted_root=sigstore.write_trusted_root(tmp_path / "trusted_root.json"))
    signed = registry.push_file("models/keyless-sig", "1.0", MODEL)
    sign_legacy(*pushers(registry, "models/keyless-sig"), sigstore, f"{registry.host}/models/keyless-sig", signed)
    item = signed_artifact(registry.host, "models/keyless-sig", "1.0")
    assert verify(item, registry.host, tmp_path, roots).path.read_bytes() == MODEL
    # A keyless signature of another manifest under this tag; and one of a signer the site does not trust.
    other = registry.push_file("models/keyless-sig", "other", b"other bytes")
    sign_legacy(*pushers(registry, "models/keyless-sig"), sigstore, f"{registry.host}/models/keyless-sig", signed,
                payload_digest=other)
    refused(item, registry.host, tmp_path / "a", "SignatureManifestMismatch", f"signs manifest {other}, not {signed}", roots)
    sign_legacy(*pushers(registry, "models/keyless-sig"), sigstore, f"{registry.host}/models/keyless-sig", signed,
                annotations=sigstore.sign_cosign_payload(b"x", "https://git.example.com/fork/release.yml"))
    refused(item, registry.host, tmp_path / "b", "CertificateIdentityMismatch", "fork/release.yml", roots)


def test_signatures_are_read_through_the_mirrors(registry: Registry, tmp_path: Path) -> None:
    """The origin unreachable, the mirror holding model and signature; then a mirror holding the
    model and no signature (yet), passed over for the origin that has one."""
    unreachable = "127.0.0.1:9"  # discard: nothing listens
    signed = registry.push_file("models/mirrored", "1.0", MODEL)
    sign_legacy(*pushers(registry, "models/mirrored"), KEY, f"{unreachable}/models/mirrored", signed)
    mirrored = FetchLimits(retries=1, oci={"plain_http": [registry.host, unreachable], "mirrors": {unreachable: [registry.host]}})
    item = signed_artifact(unreachable, "models/mirrored", "1.0")
    assert verified_artifact(ArtifactStore(tmp_path / "a"), item, None, ROOTS, None, mirrored).path.read_bytes() == MODEL
    with running_registry(tmp_path / "mirror", "none") as mirror:
        assert mirror.push_file("models/mirrored", "1.0", MODEL) == signed
        origin_after_mirror = FetchLimits(retries=1, oci={"plain_http": [registry.host, mirror.host],
                                                          "mirrors": {registry.host: [mirror.host]}})
        item = signed_artifact(registry.host, "models/mirrored", "1.0")
        assert verified_artifact(ArtifactStore(tmp_path / "b"), item, None, ROOTS, None, origin_after_mirror).path.read_bytes() == MODEL
        assert signature_bytes(item, None, origin_after_mirror) == b""


def test_a_cosign_v3_bundle_through_the_fallback_tag(registry: Registry, tmp_path: Path) -> None:
    signed = registry.push_file("models/bundled", "1.0", MODEL)
    bundle = key_bundle(KEY, f"{registry.host}/models/bundled", signed)
    attach_bundle(*pushers(registry, "models/bundled"), bundle, signed,
                  manifest_size(registry, "models/bundled", signed), fallback_tag=True)
    item = signed_artifact(registry.host, "models/bundled", "1.0")
    verify(item, registry.host, tmp_path)
    # An untrusted key's bundle beside it changes nothing; a site trusting only that key refuses.
    stranger_roots = TrustRoots(keys=(load_public_key(public_key_pem(STRANGER), "other.pub"),))
    refused(item, registry.host, tmp_path / "s", "SignatureInvalid", "none of the trusted keys", stranger_roots)


def test_a_bundle_through_the_paged_referrers_api_and_keyless(fake: FakeRegistry, tmp_path: Path) -> None:
    signed = fake.add("1.0", MODEL)
    sigstore = LocalSigstore()
    bundle = sigstore.sign_statement({"_type": "https://in-toto.io/Statement/v1",
                                      "subject": [{"name": "m", "digest": {"sha256": signed.removeprefix("sha256:")}}],
                                      "predicateType": "https://sigstore.dev/cosign/sign/v1", "predicate": {}})
    subject = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": signed,
               "size": len(fake.manifests[signed][0])}
    fake.put_manifest(None, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                             "artifactType": "application/spdx+json", "config": EMPTY_CONFIG,
                             "layers": [fake.put_blob(b'{"spdxVersion":"SPDX-2.3"}') | {"mediaType": "application/spdx+json"}],
                             "subject": subject})  # an SBOM first: the bundle is on the second page
    attach_bundle(*fake_pushers(fake), bundle, signed, subject["size"], fallback_tag=False)
    fake.page_size = 1
    roots = TrustRoots(identities=(KeylessIdentity(IDENTITY, ISSUER),),
                       sigstore_trusted_root=sigstore.write_trusted_root(tmp_path / "trusted_root.json"))
    item = signed_artifact(fake.host, "models/fake", "1.0")
    assert verify(item, fake.host, tmp_path, roots).path.read_bytes() == MODEL
    assert [path.rpartition("/")[2] for path, _ in fake.seen if "/referrers/" in path] == [signed, f"{signed}?page=1"]
    assert not any(path.endswith(f"sha256-{signed.removeprefix('sha256:')}") for path, _ in fake.seen)


def test_signatures_of_another_manifest_are_refused(registry: Registry, tmp_path: Path) -> None:
    signed = registry.push_file("models/swapped", "1.0", MODEL)
    other = registry.push_file("models/swapped", "other", b"other bytes")
    # A legacy signature of the other manifest, copied under this manifest's tag.
    sign_legacy(*pushers(registry, "models/swapped"), KEY, f"{registry.host}/models/swapped", signed, payload_digest=other)
    item = signed_artifact(registry.host, "models/swapped", "1.0")
    refused(item, registry.host, tmp_path / "a", "SignatureManifestMismatch", f"signs manifest {other}, not {signed}")
    # A bundle whose statement names the other manifest, attached to this one.
    repository = "models/swapped-bundle"
    signed = registry.push_file(repository, "1.0", MODEL)
    bundle = key_bundle(KEY, f"{registry.host}/{repository}", other)
    attach_bundle(*pushers(registry, repository), bundle, signed, manifest_size(registry, repository, signed), fallback_tag=True)
    refused(signed_artifact(registry.host, repository, "1.0"), registry.host, tmp_path / "b", "StatementMissingFile",
            "does not list")


def test_no_signature_in_the_registry_is_refused(registry: Registry, tmp_path: Path) -> None:
    signed = registry.push_file("models/unsigned", "1.0", MODEL)
    refused(signed_artifact(registry.host, "models/unsigned", "1.0"), registry.host, tmp_path, "SignatureNotFound",
            f"no signature of manifest {signed}")
    with pytest.raises(ReconcilerError, match="SignatureNotFound"):
        signature_bytes(signed_artifact(registry.host, "models/unsigned", "1.0"), None, limits(registry.host))


def test_a_signed_manifest_that_does_not_hold_the_artifact_is_refused(registry: Registry, tmp_path: Path) -> None:
    registry.push_file("models/elsewhere", "1.0", MODEL)
    signed = registry.push_file("models/elsewhere", "signed-other", b"other bytes")
    sign_legacy(*pushers(registry, "models/elsewhere"), KEY, f"{registry.host}/models/elsewhere", signed)
    item = Artifact(uri=f"oci://{registry.host}/models/elsewhere:1.0", digest=digest_of(MODEL), size=len(MODEL),
                    signature={"uri": f"oci://{registry.host}/models/elsewhere:signed-other", "format": "registry"})
    refused(item, registry.host, tmp_path, "OciLayerNotFound", "has no layer")


def test_a_signature_file_named_by_an_oci_uri(registry: Registry, tmp_path: Path) -> None:
    """``cosign sign-blob --bundle`` output pushed with ``oras push`` and named explicitly."""
    registry.push_file("models/named", "1.0", MODEL)
    bundle = json.dumps(message_bundle(KEY, MODEL)).encode()
    registry.push_file("models/named", "1.0-signature", bundle, title="model.onnx.sigstore.json",
                       media_type="application/vnd.dev.sigstore.bundle.v0.3+json")
    item = Artifact(uri=f"oci://{registry.host}/models/named:1.0", digest=digest_of(MODEL), size=len(MODEL),
                    signature={"uri": f"oci://{registry.host}/models/named:1.0-signature", "format": "sigstore-bundle"})
    assert verify(item, registry.host, tmp_path).path.read_bytes() == MODEL
