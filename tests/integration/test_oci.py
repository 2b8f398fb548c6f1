"""oci:// artifacts from a real registry (Debian's docker-registry, CNCF distribution 2.8, run on
127.0.0.1 by reconciler.devtools.ociregistry) open, behind htpasswd and behind a token service; the artifact
shapes ORAS, ModelPack and Docker's model format write; image indexes; an OCI image layout
directory; mirrors; and what that registry cannot show from a strict fake (tests/oci_fake.py):
a 307 to blob storage on another host, a 416 with a wrong length, manifest bytes that lie. Every
bad input is refused with its reason and leaves nothing in the store."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from forward_proxy import forward_proxy
from oci_fake import TOKEN, FakeRegistry, fake_registry
from test_artifacts_hardened import PROXY_VARIABLES

from reconciler.devtools.ociregistry import (
    EMPTY_CONFIG,
    OCI_INDEX,
    PASSWORD,
    USER,
    Registry,
    digest_of,
    registry_missing,
    running_registry,
)
from reconciler.errors import ReconcilerError
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.ingest.fetch import Deadline
from reconciler.manifests.models import Artifact
from reconciler.settings import FetchLimits

pytestmark = pytest.mark.skipif(registry_missing() is not None, reason=str(registry_missing()))

MODEL = os.urandom(300_000)
OTHER = os.urandom(200_000)
REPO = "models/resnet"


def artifact(uri: str, data: bytes = MODEL, size: int | None = None, arch: str | None = None) -> Artifact:
    return Artifact(uri=uri, digest=digest_of(data), size=len(data) if size is None else size,
                    signature={"uri": "model.onnx.sig"}, platform={"arch": arch} if arch else None)


def limits_for(*hosts: str, **extra: object) -> FetchLimits:
    return FetchLimits(connect_timeout=5.0, read_timeout=10.0, retries=2, backoff=0.01,
                       **{"oci": {"plain_http": list(hosts)}} | extra)


def with_password(host: str, password_env: str = "OCI_TEST_PASSWORD") -> dict:
    return {"auth": {host: {"username": USER, "password_env": password_env, "allow_http": True}}}


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCI_TEST_PASSWORD", PASSWORD)
    monkeypatch.setenv("OCI_WRONG_PASSWORD", "not-" + PASSWORD)


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("open"), "none") as registry:
        yield registry


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("basic"), "htpasswd") as registry:
        registry.push_file(REPO, "1.0", MODEL)
        yield registry


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("token"), "token") as registry:
        registry.push_file(REPO, "1.0", MODEL)
        yield registry


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "state")


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    with fake_registry() as registry:
        yield registry


def ingested(store: ArtifactStore, item: Artifact, limits: FetchLimits) -> bytes:
    got = store.ingest(item, None, limits)
    assert got.fetched and got.digest == item.digest
    return got.path.read_bytes()


def refused(store: ArtifactStore, item: Artifact, limits: FetchLimits, reason: str, words: str) -> ReconcilerError:
    with pytest.raises(ReconcilerError) as caught:
        store.ingest(item, None, limits)
    assert caught.value.reason == reason, caught.value
    assert words in str(caught.value)
    assert list(store.blobs.glob("*")) == []
    return caught.value


# --- the shapes artifacts come in -----------------------------------------------------------------

def test_an_oras_file_by_tag_and_by_digest(open_registry: Registry, store: ArtifactStore, tmp_path: Path) -> None:
    manifest = open_registry.push_file("models/oras", "v1", MODEL)
    limits = limits_for(open_registry.host)
    assert ingested(store, artifact(f"oci://{open_registry.host}/models/oras:v1"), limits) == MODEL
    other = ArtifactStore(tmp_path / "other")
    assert ingested(other, artifact(f"oci://{open_registry.host}/models/oras:v1@{manifest}"), limits) == MODEL


def modelpack(registry: Registry, repository: str, tag: str) -> str:
    """A ModelPack artifact: its config, the ONNX weight as a raw layer, a README beside it."""
    config = registry.push_blob(repository, json.dumps({"config": {"format": "onnx"}, "modelfs": {
        "type": "layers", "diffIds": [digest_of(MODEL), digest_of(b"# resnet\n")]}}).encode())
    weight = registry.push_blob(repository, MODEL) | {
        "mediaType": "application/vnd.cncf.model.weight.v1.raw", "annotations": {"org.cncf.model.filepath": "resnet.onnx"}}
    doc = registry.push_blob(repository, b"# resnet\n") | {
        "mediaType": "application/vnd.cncf.model.doc.v1.raw", "annotations": {"org.cncf.model.filepath": "README.md"}}
    return registry.push_manifest(repository, tag, {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": config | {"mediaType": "application/vnd.cncf.model.config.v1+json"}, "layers": [weight, doc]})


def test_a_modelpack_weight_is_chosen_by_digest_by_file_path_and_by_media_type(
        open_registry: Registry, tmp_path: Path) -> None:
    manifest = modelpack(open_registry, "models/modelpack", "1.0")
    base = f"oci://{open_registry.host}/models/modelpack"
    limits = limits_for(open_registry.host)
    for n, uri in enumerate((f"{base}:1.0", f"{base}@{manifest}", f"{base}@{manifest}#resnet.onnx")):
        assert ingested(ArtifactStore(tmp_path / str(n)), artifact(uri), limits) == MODEL
    readme = Artifact(uri=f"{base}@{manifest}#README.md", digest=digest_of(b"# resnet\n"), size=9,
                      signature={"uri": "x.sig"})
    assert ingested(ArtifactStore(tmp_path / "readme"), readme, limits) == b"# resnet\n"


def test_a_docker_model_layer_without_artifact_type(open_registry: Registry, store: ArtifactStore) -> None:
    config = open_registry.push_blob("models/docker", b'{"config":{"format":"onnx"}}')
    layer = open_registry.push_blob("models/docker", MODEL) | {"mediaType": "application/vnd.docker.ai.model.file"}
    open_registry.push_manifest("models/docker", "latest", {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config | {"mediaType": "application/vnd.docker.ai.model.config.v0.1+json"}, "layers": [layer]})
    uri = f"oci://{open_registry.host}/models/docker:latest"
    assert ingested(store, artifact(uri), limits_for(open_registry.host)) == MODEL


def test_an_image_index_is_resolved_by_the_artifacts_architecture(open_registry: Registry, tmp_path: Path) -> None:
    entries = []
    for arch, data in (("amd64", MODEL), ("arm64", OTHER)):
        digest = open_registry.push_file("models/multi", f"only-{arch}", data)
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                        "size": len(json.dumps(_manifest_of(open_registry, "models/multi", digest),
                                               separators=(",", ":"))),
                        "platform": {"architecture": arch, "os": "linux"}})
    index = open_registry.push_manifest("models/multi", "1.0", {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                               "manifests": entries}, OCI_INDEX)
    uri = f"oci://{open_registry.host}/models/multi@{index}"
    limits = limits_for(open_registry.host)
    assert ingested(ArtifactStore(tmp_path / "arm"), artifact(uri, OTHER, arch="arm64"), limits) == OTHER
    assert ingested(ArtifactStore(tmp_path / "amd"), artifact(uri, MODEL, arch="amd64"), limits) == MODEL
    refused(ArtifactStore(tmp_path / "riscv"), artifact(uri, MODEL, arch="riscv64"), limits,
            "OciPlatformMissing", "no manifest for architecture riscv64 (it has amd64, arm64)")


def _manifest_of(registry: Registry, repository: str, digest: str) -> dict:
    status, _, body = registry._call("GET", f"/v2/{repository}/manifests/{digest}", repository, b"",
                                     {"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 200
    return json.loads(body)


def test_an_oci_image_layout_directory(open_registry: Registry, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    layer = {"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": digest_of(MODEL), "size": len(MODEL)}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "artifactType": "application/vnd.cncf.model.manifest.v1+json",
                           "config": EMPTY_CONFIG, "layers": [layer]}).encode()
    for blob in (MODEL, manifest, b"{}"):
        (layout / "blobs" / "sha256" / digest_of(blob).removeprefix("sha256:")).write_bytes(blob)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest_of(manifest),
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "1.0"}}]}))
    limits = limits_for()
    assert ingested(ArtifactStore(tmp_path / "a"), artifact(f"oci-layout://{layout}:1.0"), limits) == MODEL
    assert ingested(ArtifactStore(tmp_path / "b"), artifact(f"oci-layout://{layout}@{digest_of(manifest)}"), limits) == MODEL
    refused(ArtifactStore(tmp_path / "c"), artifact(f"oci-layout://{layout}:2.0"), limits, "ArtifactNotFound", "no manifest '2.0'")


# --- credentials ----------------------------------------------------------------------------------

def test_htpasswd_credentials_from_site_settings(basic_registry: Registry, store: ArtifactStore) -> None:
    limits = limits_for(basic_registry.host, **with_password(basic_registry.host))
    assert ingested(store, artifact(f"oci://{basic_registry.host}/{REPO}:1.0"), limits) == MODEL


def test_htpasswd_credentials_from_a_docker_config(basic_registry: Registry, store: ArtifactStore, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    pair = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {f"http://{basic_registry.host}/v2/": {"auth": pair}}}))
    limits = FetchLimits(retries=1, oci={"plain_http": [basic_registry.host], "docker_config": config})
    assert ingested(store, artifact(f"oci://{basic_registry.host}/{REPO}:1.0"), limits) == MODEL


@pytest.mark.parametrize("extra,reason,words", [
    ({}, "ArtifactAuthMissing", "wants credentials"),
    ("wrong", "OciAuthRejected", "answers 401 again after authenticating"),
])
def test_htpasswd_without_the_right_credentials_is_refused(basic_registry: Registry, store: ArtifactStore,
                                                           extra: object, reason: str, words: str) -> None:
    auth = with_password(basic_registry.host, "OCI_WRONG_PASSWORD") if extra == "wrong" else {}
    refused(store, artifact(f"oci://{basic_registry.host}/{REPO}:1.0"), limits_for(basic_registry.host, **auth),
            reason, words)


def test_token_auth_asks_one_token_per_scope(token_registry: Registry, tmp_path: Path) -> None:
    tokens = token_registry.token_server
    limits = limits_for(token_registry.host, **with_password(token_registry.host))
    asked = len(tokens.requests)
    for n in range(2):
        assert ingested(ArtifactStore(tmp_path / str(n)), artifact(f"oci://{token_registry.host}/{REPO}:1.0"), limits) == MODEL
    assert tokens.requests[asked:] == [{"service": ["test-registry"], "scope": [f"repository:{REPO}:pull"]}]


@pytest.mark.parametrize("settings,reason,words", [
    (("refuse_all",), "OciAuthRejected", "token service of"),
    (("anonymous", "useless"), "OciAuthRejected", "answers 401 again after authenticating"),
])
def test_token_auth_refusals_end_without_a_loop(token_registry: Registry, store: ArtifactStore,
                                                settings: tuple[str, ...], reason: str, words: str) -> None:
    tokens = token_registry.token_server
    for setting in settings:
        setattr(tokens, setting, True)
    try:
        # Anonymous or another user than the one whose token is kept, so the token service is asked.
        auth = {} if "anonymous" in settings else with_password(token_registry.host, "OCI_WRONG_PASSWORD")
        limits = limits_for(token_registry.host, **auth)
        asked = len(tokens.requests)
        refused(store, artifact(f"oci://{token_registry.host}/{REPO}:1.0"), limits, reason, words)
        assert len(tokens.requests) - asked == 1  # Stalled: asked once, no retry, no loop
    finally:
        for setting in settings:
            setattr(tokens, setting, False)


# --- what the registry holds is not what the Model document pins ------------------------------------

def test_bad_artifacts_are_refused(open_registry: Registry, tmp_path: Path) -> None:
    host = open_registry.host
    limits = limits_for(host)
    first = open_registry.push_file("models/bad", "1.0", MODEL)
    other = open_registry.push_file("models/bad", "other", OTHER)
    cases = [
        ("wrong digest", artifact(f"oci://{host}/models/bad@{first}", OTHER, size=len(MODEL)),
         "OciLayerNotFound", "has no layer"),
        ("another artifact's manifest", artifact(f"oci://{host}/models/bad@{other}"), "OciLayerNotFound", "another artifact's"),
        ("layer larger than pinned", artifact(f"oci://{host}/models/bad:1.0", size=len(MODEL) - 1),
         "ArtifactTooLarge", f"has {len(MODEL)} bytes"),
        ("no such tag", artifact(f"oci://{host}/models/bad:9.9"), "ArtifactNotFound", "HTTP 404"),
    ]
    for n, (_, item, reason, words) in enumerate(cases):
        refused(ArtifactStore(tmp_path / str(n)), item, limits, reason, words)
    open_registry.push_file("models/bad", "1.0", OTHER)  # the tag moves
    refused(ArtifactStore(tmp_path / "moved"), artifact(f"oci://{host}/models/bad:1.0"), limits,
            "OciLayerNotFound", "or the tag moved")


# --- mirrors ----------------------------------------------------------------------------------------

def test_a_mirror_is_tried_first_and_the_origin_after_it(open_registry: Registry, tmp_path: Path) -> None:
    open_registry.push_file("models/mirrored", "1.0", MODEL)
    unreachable = "127.0.0.1:9"  # discard: nothing listens
    limits = limits_for(open_registry.host, unreachable, oci={
        "plain_http": [open_registry.host, unreachable], "mirrors": {unreachable: [open_registry.host]}})
    assert ingested(ArtifactStore(tmp_path / "a"), artifact(f"oci://{unreachable}/models/mirrored:1.0"), limits) == MODEL
    limits = limits_for(open_registry.host, unreachable, oci={
        "plain_http": [open_registry.host, unreachable], "mirrors": {open_registry.host: [unreachable]}})
    assert ingested(ArtifactStore(tmp_path / "b"), artifact(f"oci://{open_registry.host}/models/mirrored:1.0"), limits) == MODEL


# --- what Debian's registry cannot show: the strict fake -------------------------------------------

def test_a_redirect_to_blob_storage_does_not_carry_the_token(fake: FakeRegistry, store: ArtifactStore) -> None:
    fake.add("1.0", MODEL)
    assert ingested(store, artifact(f"oci://{fake.host}/models/fake:1.0"), limits_for(fake.host)) == MODEL
    assert any(h.get("Authorization") == f"Bearer {TOKEN}" for path, h in fake.seen if "/blobs/" in path)
    assert fake.storage.seen and all("Authorization" not in h for _, h in fake.storage.seen)


def test_a_redirect_is_not_followed_where_the_site_follows_none(fake: FakeRegistry, store: ArtifactStore) -> None:
    fake.add("1.0", MODEL)
    refused(store, artifact(f"oci://{fake.host}/models/fake:1.0"), limits_for(fake.host, redirects="none"),
            "ArtifactRedirectRefused", "fetch.redirects: none")


def test_a_download_resumes_with_range_after_a_redirect(fake: FakeRegistry, store: ArtifactStore) -> None:
    fake.add("1.0", MODEL)
    kept = _leave_part_file(store, MODEL, 100_000)
    assert ingested(store, artifact(f"oci://{fake.host}/models/fake:1.0"), limits_for(fake.host)) == MODEL
    assert [h.get("Range") for _, h in fake.storage.seen] == [f"bytes={kept}-"]


def test_a_416_with_a_wrong_length_is_refused(fake: FakeRegistry, store: ArtifactStore) -> None:
    fake.add("1.0", MODEL)
    fake.storage.wrong_416 = True
    _leave_part_file(store, MODEL, 100_000)
    with pytest.raises(ReconcilerError) as caught:
        store.ingest(artifact(f"oci://{fake.host}/models/fake:1.0"), None, limits_for(fake.host))
    assert caught.value.reason == "ArtifactRangeInvalid" and "HTTP 416" in str(caught.value)
    assert list(store.blobs.glob("*")) == []


def test_manifest_bytes_that_do_not_hash_to_the_pin_are_refused(fake: FakeRegistry, store: ArtifactStore) -> None:
    manifest = fake.add("1.0", MODEL)
    fake.lying = True
    refused(store, artifact(f"oci://{fake.host}/models/fake@{manifest}"), limits_for(fake.host),
            "OciManifestDigestMismatch", f"pinned {manifest}")


def test_a_busy_registry_and_storage_are_left_alone_as_long_as_they_ask(fake: FakeRegistry, store: ArtifactStore,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """503 from the token service and 429 on the manifest with Retry-After in seconds, 503 from
    blob storage with an HTTP-date:
    each next attempt waits what was asked (the waits are recorded, not slept)."""
    fake.add("1.0", MODEL)
    fake.token_busy = [(503, "3")]
    fake.busy = [(429, "7")]
    fake.storage.busy = [(503, email.utils.formatdate(time.time() + 60, usegmt=True))]
    waits: list[float] = []
    monkeypatch.setattr(Deadline, "pause", lambda self, seconds: waits.append(seconds))
    limits = limits_for(fake.host).model_copy(update={"retries": 4})
    assert ingested(store, artifact(f"oci://{fake.host}/models/fake:1.0"), limits) == MODEL
    assert waits[:2] == [3, 7] and 58 <= waits[2] <= 60, waits
    assert [path.partition("?")[0] for path, _ in fake.seen if "/token" in path or "/manifests/" in path] == \
        ["/v2/models/fake/manifests/1.0", "/token", "/v2/models/fake/manifests/1.0", "/token",
         "/v2/models/fake/manifests/1.0", "/v2/models/fake/manifests/1.0", "/v2/models/fake/manifests/1.0"]


def test_a_registry_asking_for_more_than_the_deadline_is_refused_at_once(fake: FakeRegistry, store: ArtifactStore,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add("1.0", MODEL)
    fake.busy = [(429, "120")]
    waits: list[float] = []
    monkeypatch.setattr(Deadline, "pause", lambda self, seconds: waits.append(seconds))
    refused(store, artifact(f"oci://{fake.host}/models/fake:1.0"), limits_for(fake.host, deadline=30),
            "ArtifactDeadlineExceeded", "Retry-After: 120 s")
    assert waits == []


def _leave_part_file(store: ArtifactStore, data: bytes, kept: int) -> int:
    """What a stopped download leaves: the first ``kept`` bytes and the record of how many."""
    store.tmp.mkdir(parents=True, exist_ok=True)
    hex_digits = hashlib.sha256(data).hexdigest()
    (store.tmp / f"{hex_digits}.part").write_bytes(data[:kept])
    (store.tmp / f"{hex_digits}.kept").write_text(str(kept))
    return kept


def test_the_registry_is_reached_through_the_sites_proxy(open_registry: Registry, store: ArtifactStore,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    open_registry.push_file("models/proxied", "1.0", MODEL)
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    with forward_proxy() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        uri = f"oci://{open_registry.host}/models/proxied:1.0"
        assert ingested(store, artifact(uri), limits_for(open_registry.host)) == MODEL
    base = f"http://{open_registry.host}/v2/models/proxied"
    assert [r for r in proxy.requests if "/v2/" in r[1]] == [("GET", f"{base}/manifests/1.0"),
                                                             ("GET", f"{base}/blobs/{digest_of(MODEL)}")]
