"""``reconciler push``: a model published to Debian's registry (behind htpasswd with docker's
config.json, and behind a token service) as a ModelPack artifact signed as cosign signs, then
fetched and verified by a site exactly as the Model document entry it prints says."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_release import commented_fleet, reconciler  # noqa: F401 (a fixture)

from reconciler.cli.main import main
from reconciler.devtools.ociregistry import PASSWORD, USER, Registry, registry_missing, running_registry
from reconciler.devtools.onnx_builder import dense_model, dense_reference, split_external_data
from reconciler.errors import ReconcilerError
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.ingest.ocipush import push_model
from reconciler.ingest.ocisignatures import registry_signature_count, verify_registry_signature
from reconciler.ingest.verification import verified_artifact, verified_model
from reconciler.manifests.models import Artifact, ModelInterface, ValidationCase
from reconciler.runtime.validation import run_validation
from reconciler.settings import FetchLimits
from reconciler.trust import (
    TrustRoots,
    generate_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
)

pytestmark = pytest.mark.skipif(registry_missing() is not None, reason=str(registry_missing()))

MODEL = os.urandom(150_000)
KEY = generate_private_key()
ROOTS = TrustRoots(keys=(load_public_key(public_key_pem(KEY), "release.pub"),))


@pytest.fixture(params=["htpasswd", "token"])
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp(request.param), request.param) as running:
        yield running


def docker_config(tmp_path: Path, host: str) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
    return path


def entry(output: str) -> Artifact:
    """The artifact entry ``push`` prints for the Model document."""
    uri = re.search(r"- uri: (\S+)", output)[1]
    return Artifact(uri=uri, digest=re.search(r"digest: (\S+)", output)[1], size=int(re.search(r"size: (\d+)", output)[1]),
                    signature={"uri": uri, "format": "registry"})


def test_push_then_a_site_fetches_and_verifies_what_it_printed(registry: Registry, tmp_path: Path, capsys) -> None:
    (tmp_path / "model.onnx").write_bytes(MODEL)
    (tmp_path / "cosign.key").write_bytes(private_key_pem(KEY))
    config = docker_config(tmp_path, registry.host)
    uri = f"oci://{registry.host}/models/pushed:1.0"
    assert main(["push", str(tmp_path / "model.onnx"), uri, "--key", str(tmp_path / "cosign.key"),
                 "--docker-config", str(config), "--plain-http"]) == 0
    artifact = entry(capsys.readouterr().out)
    assert artifact.uri.startswith(uri + "@sha256:") and artifact.size == len(MODEL)

    limits = FetchLimits(retries=1, oci={"plain_http": [registry.host], "docker_config": config})
    got = verified_artifact(ArtifactStore(tmp_path / "state"), artifact, None, ROOTS, None, limits)
    assert got.path.read_bytes() == MODEL
    # Both of cosign's forms are there, and the v3 bundle (tried first) verifies on its own.
    assert registry_signature_count(artifact, limits) == 2
    assert verify_registry_signature(artifact, ROOTS, limits).format == "sigstore-bundle"


def test_push_of_a_model_with_external_data_then_a_site_loads_it_from_what_it_printed(
        registry: Registry, tmp_path: Path, capsys) -> None:
    layers = [(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), np.array([0.5, 0, -0.5], np.float32), None)]
    main_bytes, files = split_external_data(dense_model(layers), "weights/w.bin")
    (tmp_path / "weights").mkdir()
    (tmp_path / "model.onnx").write_bytes(main_bytes)
    (tmp_path / "weights" / "w.bin").write_bytes(files["weights/w.bin"])
    (tmp_path / "cosign.key").write_bytes(private_key_pem(KEY))
    config = docker_config(tmp_path, registry.host)
    assert main(["push", str(tmp_path / "model.onnx"), f"oci://{registry.host}/models/external:1.0", "--file", "weights/w.bin",
                 "--key", str(tmp_path / "cosign.key"), "--docker-config", str(config), "--plain-http"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out.split("In the Model document's version:\n")[1])
    artifact = Artifact.model_validate(printed["artifacts"][0])
    assert [(f.path, f.size) for f in artifact.files] == [("weights/w.bin", len(files["weights/w.bin"]))]

    limits = FetchLimits(retries=1, oci={"plain_http": [registry.host], "docker_config": config})
    got = verified_model(ArtifactStore(tmp_path / "state"), artifact, None, ROOTS, None, limits)
    assert (got.path.parent / "weights" / "w.bin").read_bytes() == files["weights/w.bin"]
    x = [[0.1, 0.2, 0.3, 0.4]]
    case = ValidationCase(name="weights", inputs={"input": x}, expected={"output": dense_reference(layers, np.array(x)).tolist()})
    interface = ModelInterface(inputs=[{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
                               outputs=[{"name": "output", "dtype": "float32", "shape": [-1, 3]}])
    assert run_validation(got.path, interface, [case]).cases[0].passed


@pytest.mark.parametrize("path", ["../w.bin", "/etc/passwd", "model.onnx"])
def test_push_refuses_a_file_that_is_not_beside_the_model(tmp_path: Path, path: str) -> None:
    (tmp_path / "model.onnx").write_bytes(MODEL)
    with pytest.raises(ReconcilerError, match="beside|the ONNX file itself"):
        push_model(tmp_path / "model.onnx", "oci://127.0.0.1:9/m:1", FetchLimits(), files=[path])


def test_push_without_credentials_is_refused(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(MODEL)
    with pytest.raises(ReconcilerError) as caught:
        push_model(tmp_path / "model.onnx", f"oci://{registry.host}/models/pushed:1.0",
                   FetchLimits(retries=1, oci={"plain_http": [registry.host]}))
    assert caught.value.reason in ("ArtifactAuthMissing", "OciAuthRejected"), caught.value


@pytest.mark.parametrize("uri", ["oci://r.example/models/m@sha256:" + "a" * 64, "oci://r.example/models/m:1#x.onnx",
                                 "oci-layout:///srv/layout:1"])
def test_push_needs_a_registry_and_a_tag(tmp_path: Path, uri: str) -> None:
    (tmp_path / "model.onnx").write_bytes(MODEL)
    with pytest.raises(ReconcilerError, match="push to oci://REGISTRY/REPOSITORY:TAG"):
        push_model(tmp_path / "model.onnx", uri, FetchLimits())


def test_add_version_push_records_the_pinned_uri_and_a_site_verifies_it(commented_fleet, tmp_path: Path) -> None:  # noqa: F811
    fleet = commented_fleet["fleet"]
    with running_registry(tmp_path / "open") as open_registry:
        assert reconciler("add-version", "churn", "1.1.0", commented_fleet["candidate"], "--repo", fleet,
                          "--key", commented_fleet["key"], "--push", f"oci://{open_registry.host}/models/churn:1.1.0",
                          "--plain-http") == 0
        version = yaml.safe_load((fleet / "models" / "churn" / "model.yaml").read_text())["spec"]["versions"][-1]
        [recorded] = version["artifacts"]
        assert recorded["uri"].startswith(f"oci://{open_registry.host}/models/churn:1.1.0@sha256:")
        assert recorded["signature"] == {"uri": "models/churn/1.1.0/churn.onnx.sig", "format": "cosign"}
        assert sorted(p.name for p in (fleet / "models" / "churn" / "1.1.0").iterdir()) == ["churn.onnx.sig"]
        roots = TrustRoots(keys=(load_public_key(commented_fleet["pub"].read_bytes(), "release.pub"),))
        limits = FetchLimits(retries=1, oci={"plain_http": [open_registry.host]})
        got = verified_artifact(ArtifactStore(tmp_path / "state"), Artifact.model_validate(recorded), None, roots, fleet, limits)
        assert got.path.read_bytes() == commented_fleet["candidate"].read_bytes()
