"""The pure half of oci:// artifacts: what a URI names, which manifest of an index and which layer
of a manifest hold the artifact, what a registry's challenge asks for."""

from __future__ import annotations

import json

import pytest

from reconciler.errors import Stalled
from reconciler.ingest.oci import OciReference, choose_in_index, choose_layer, parse_manifest, parse_reference
from reconciler.ingest.ociauth import parse_challenge

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
RAW = "application/vnd.cncf.model.weight.v1.raw"


@pytest.mark.parametrize("uri,expected", [
    ("oci://ghcr.io/acme/models/resnet:1.0", OciReference("ghcr.io", "acme/models/resnet", "1.0", None, None)),
    (f"oci://127.0.0.1:5000/resnet@{A}", OciReference("127.0.0.1:5000", "resnet", None, A, None)),
    (f"oci://Reg.Example/m:v2@{A}#model.onnx", OciReference("reg.example", "m", "v2", A, "model.onnx")),
    ("oci-layout:///srv/layouts/resnet:1.0", OciReference("/srv/layouts/resnet", "", "1.0", None, None)),
    (f"oci-layout:///srv/layouts/resnet@{A}", OciReference("/srv/layouts/resnet", "", None, A, None)),
])
def test_references_that_name_a_manifest(uri: str, expected: OciReference) -> None:
    assert parse_reference(uri) == expected


@pytest.mark.parametrize("uri,words", [
    ("oci://registry/resnet", "names no manifest"),
    ("oci://registry", "expected oci://REGISTRY/REPOSITORY"),
    ("oci://registry/ResNet:1", "lower-case repository"),
    ("oci://registry/resnet:-bad", "not a valid tag"),
    ("oci://registry/resnet@sha256:abc", "not a sha256 digest"),
    ("oci-layout://relative/dir:1.0", "oci-layout:///absolute/path"),
])
def test_references_refused(uri: str, words: str) -> None:
    with pytest.raises(Stalled) as caught:
        parse_reference(uri)
    assert caught.value.reason == "ArtifactUriInvalid" and words in str(caught.value)


def layer(digest: str, media_type: str = RAW, **annotations: str) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": 10,
            "annotations": {k.replace("_", "."): v for k, v in annotations.items()}}


def manifest(*layers: dict) -> dict:
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": list(layers)}


PACK = manifest(layer(A, org_cncf_model_filepath="model.onnx"),
                layer(B, "application/vnd.cncf.model.doc.v1.raw", org_cncf_model_filepath="README.md"))
ORAS = manifest(layer(A, "application/vnd.oci.image.layer.v1.tar", org_opencontainers_image_title="model.onnx"),
                layer(B, "application/vnd.oci.image.layer.v1.tar", org_opencontainers_image_title="labels.txt"))
BY_TAG = OciReference("r", "m", "1", None, None)


@pytest.mark.parametrize("name,document,pinned,file,chosen", [
    ("pinned digest", ORAS, B, None, B),
    ("ModelPack file path", PACK, None, "README.md", B),
    ("ORAS title", ORAS, None, "model.onnx", A),
    ("the one weight among docs", PACK, None, None, A),
])
def test_layer_choice(name: str, document: dict, pinned: str | None, file: str | None, chosen: str) -> None:
    ref = OciReference("r", "m", "1", None, file)
    assert choose_layer("u", ref, document, pinned)["digest"] == chosen


@pytest.mark.parametrize("name,document,ref,pinned,reason,words", [
    ("pin on no layer, by tag", PACK, BY_TAG, C, "OciLayerNotFound", "or the tag moved"),
    ("pin on no layer, by digest", PACK, OciReference("r", "m", None, A, None), C, "OciLayerNotFound", "another artifact's"),
    ("no such file", PACK, OciReference("r", "m", "1", None, "x.onnx"), None, "OciLayerNotFound", "'x.onnx'"),
    ("two files, nothing to choose by", ORAS, BY_TAG, None, "OciLayerAmbiguous", "2 layers"),
    ("a tar+gzip layer", manifest(layer(A, "application/vnd.kitops.modelkit.model.v1.tar+gzip")), BY_TAG, A,
     "OciLayerUnsupported", "archive"),
    ("an ORAS directory", manifest(layer(A, "application/vnd.oci.image.layer.v1.tar",
                                         io_deis_oras_content_unpack="true")), BY_TAG, A, "OciLayerUnsupported", "archive"),
    ("no layers", manifest(), BY_TAG, A, "OciManifestInvalid", "no layers"),
    ("a layer without digest", manifest({"mediaType": RAW, "size": 1}), BY_TAG, A, "OciManifestInvalid", "sha256"),
    ("a negative size", manifest(layer(A) | {"size": -1}), BY_TAG, A, "OciManifestInvalid", "no valid size"),
])
def test_layer_choice_refused(name: str, document: dict, ref: OciReference, pinned: str | None,
                              reason: str, words: str) -> None:
    with pytest.raises(Stalled) as caught:
        choose_layer("u", ref, document, pinned)
    assert caught.value.reason == reason and words in str(caught.value)


def entry(digest: str, arch: str | None, os: str = "linux", **extra: str) -> dict:
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 100,
            **({"platform": {"architecture": arch, "os": os}} if arch else {}), **extra}


def test_an_index_is_resolved_by_architecture_on_linux() -> None:
    index = {"manifests": [entry(A, "amd64"), entry(B, "arm64", os="windows"), entry(C, "arm64")]}
    assert choose_in_index("u", index, "arm64")["digest"] == C
    assert choose_in_index("u", {"manifests": [entry(A, None)]}, "arm64")["digest"] == A  # the only one
    signed = {"manifests": [entry(A, None), entry(B, None, artifactType="application/vnd.dev.sigstore.bundle.v0.3+json")]}
    assert choose_in_index("u", signed, "arm64")["digest"] == A
    with pytest.raises(Stalled, match="no manifest for architecture s390x"):
        choose_in_index("u", index, "s390x")


@pytest.mark.parametrize("body,content_type,words", [
    (b"not json", None, "not JSON"),
    (b"[]", None, "not a JSON object"),
    (json.dumps({"mediaType": "application/vnd.oci.image.manifest.v1+json"}).encode(),
     "application/vnd.oci.image.index.v1+json", "served as"),
    (json.dumps({"mediaType": "application/vnd.docker.distribution.manifest.v1+json"}).encode(), None, "expected an OCI"),
])
def test_manifests_refused(body: bytes, content_type: str | None, words: str) -> None:
    with pytest.raises(Stalled) as caught:
        parse_manifest("u", body, content_type)
    assert caught.value.reason == "OciManifestInvalid" and words in str(caught.value)


def test_a_manifest_without_media_type_takes_the_served_one() -> None:
    body = json.dumps({"schemaVersion": 2, "layers": []}).encode()
    kind = "application/vnd.oci.image.manifest.v1+json; charset=utf-8"
    assert parse_manifest("u", body, kind)["mediaType"] == "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.parametrize("header,scheme,params", [
    ('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
     "bearer", {"realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:a/b:pull,push"}),
    ('Basic realm="basic-realm"', "basic", {"realm": "basic-realm"}),
    ("bearer realm=https://auth.example/token,service=x", "bearer", {"realm": "https://auth.example/token", "service": "x"}),
])
def test_challenges(header: str, scheme: str, params: dict[str, str]) -> None:
    challenge = parse_challenge("u", header)
    assert (challenge.scheme, challenge.params) == (scheme, params)


@pytest.mark.parametrize("header", [None, "Negotiate abc", 'Bearer service="x"', 'Bearer realm="file:///etc/passwd"'])
def test_challenges_refused(header: str | None) -> None:
    with pytest.raises(Stalled) as caught:
        parse_challenge("u", header)
    assert caught.value.reason == "OciAuthUnsupported"
