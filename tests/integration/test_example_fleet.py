"""The example fleet is consistent: manifests parse, digests, sizes and signatures match the files,
validation cases pass under real onnxruntime, and the build script reproduces the models."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from itertools import combinations
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import onnxruntime
import pytest
import yaml

from reconciler import trust
from reconciler.delivery.plan import pick_artifact
from reconciler.flags.model import FlagFile
from reconciler.manifests.deployments import Deployment
from reconciler.manifests.documents import KINDS
from reconciler.manifests.models import Fleet, Model, Site
from reconciler.manifests.selectors import matches

PROJECT = Path(__file__).resolve().parents[2]
REPO = PROJECT / "example-fleet-repo"


@pytest.fixture(scope="module")
def build_script(monkeypatch_module):
    """scripts/ is not a package: load the script as a module, registered while it is in use
    (dataclasses look their module up in sys.modules)."""
    spec = importlib.util.spec_from_file_location("build_example_fleet", PROJECT / "scripts" / "build_example_fleet.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch_module.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def yaml_files() -> list[Path]:
    return sorted(REPO.rglob("*.yaml"))


def documents() -> list[tuple[Path, object]]:
    return [
        (path, KINDS[doc["kind"]].model_validate(doc))
        for path in yaml_files()
        for doc in yaml.safe_load_all(path.read_text())
    ]


def of_kind(kind: type) -> dict[str, object]:
    return {doc.metadata.name: doc for _, doc in documents() if isinstance(doc, kind)}


MODELS: dict[str, Model] = of_kind(Model)
VERSIONS = [(model, version) for model in MODELS.values() for version in model.spec.versions]
VERSION_IDS = [f"{m.metadata.name}@{v.version}" for m, v in VERSIONS]
ARTIFACTS = [(model, version, artifact) for model, version in VERSIONS for artifact in version.artifacts]
ARTIFACT_IDS = [f"{m.metadata.name}@{v.version}:{a.uri.rsplit('/', 1)[-1]}" for m, v, a in ARTIFACTS]


@pytest.fixture(scope="module")
def demo_key() -> trust.TrustedKey:
    return trust.load_public_key((REPO / "keys" / "demo.pub").read_bytes(), "keys/demo.pub")


# --- manifests --------------------------------------------------------------------------------

def test_fleet_has_the_promised_shape():
    sites: dict[str, Site] = of_kind(Site)
    assert len(of_kind(Fleet)) == 1
    assert len(sites) >= 10
    labels = [site.metadata.labels for site in sites.values()]
    assert {label["region"] for label in labels} == {"eu-central", "us-east", "ap-south"}
    assert {label["tier"] for label in labels} == {"store", "factory"}
    assert {label["arch"] for label in labels} == {"amd64", "arm64"}
    assert any(site.spec.maintenanceWindows for site in sites.values())
    assert any(not site.spec.maintenanceWindows for site in sites.values())
    assert len(MODELS) >= 3 and all(len(m.spec.versions) >= 2 for m in MODELS.values())
    assert len(of_kind(Deployment)) >= 3


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_file_names_and_satisfies_its_schema(path: Path):
    first_line = path.read_text().splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first_line.startswith(prefix)
    kinds = {doc["kind"] for doc in yaml.safe_load_all(path.read_text())}
    assert len(kinds) == 1
    schema_path = (path.parent / first_line.removeprefix(prefix)).resolve()
    assert schema_path == (PROJECT / "schemas").resolve() / f"{kinds.pop().lower()}.schema.json"
    validator = jsonschema.Draft202012Validator(json.loads(schema_path.read_text()))
    for doc in yaml.safe_load_all(path.read_text()):
        assert [error.message for error in validator.iter_errors(doc)] == []


def test_flag_file_is_valid_flagd():
    raw = json.loads((REPO / "flags" / "fleet.flagd.json").read_text())
    flags = FlagFile.model_validate(raw)
    schema = json.loads((PROJECT / "schemas" / "flags.schema.json").read_text())
    assert [error.message for error in jsonschema.Draft202012Validator(schema).iter_errors(raw)] == []
    assert flags.schema_ == "https://flagd.dev/schema/v0/flags.json"
    assert "fraud-score-enabled" in flags.flags
    refs = json.dumps(raw["flags"])
    assert all(f'"$ref": "{name}"' in refs for name in flags.evaluators)


@pytest.mark.parametrize("deployment", of_kind(Deployment).values(), ids=lambda d: d.metadata.name)
def test_deployment_references_resolve(deployment: Deployment):
    model = MODELS[deployment.spec.model]
    versions = [v.version for v in model.spec.versions]
    assert deployment.spec.version in versions
    # The demo bumps a deployment to a newer version, so every one starts on an older one.
    assert deployment.spec.version != versions[-1]
    assert any(matches(deployment.spec.targets, site.metadata.labels) for site in of_kind(Site).values())
    if not isinstance(deployment.spec.enabled, bool):
        flags = FlagFile.model_validate_json((REPO / "flags" / "fleet.flagd.json").read_bytes())
        assert deployment.spec.enabled.flag in flags.flags


# --- artifacts --------------------------------------------------------------------------------

def artifact_bytes(uri: str) -> bytes:
    path = (REPO / uri).resolve()
    assert path.is_relative_to(REPO)
    return path.read_bytes()


@pytest.mark.parametrize("model, version, artifact", ARTIFACTS, ids=ARTIFACT_IDS)
def test_artifact_digest_size_and_signature(model: Model, version, artifact, demo_key):
    data = artifact_bytes(artifact.uri)
    assert artifact.digest == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert artifact.size == len(data)
    assert artifact.signature.format == "cosign"
    signature = artifact_bytes(artifact.signature.uri)
    assert trust.verify_cosign(hashlib.sha256(data).digest(), signature, [demo_key]) == demo_key


@pytest.mark.parametrize("model, version, artifact", ARTIFACTS, ids=ARTIFACT_IDS)
def test_validation_cases_pass_under_onnxruntime(model: Model, version, artifact):
    session = onnxruntime.InferenceSession(artifact_bytes(artifact.uri), providers=["CPUExecutionProvider"])
    interface = model.spec.interface
    assert [i.name for i in session.get_inputs()] == [t.name for t in interface.inputs]
    assert [o.name for o in session.get_outputs()] == [t.name for t in interface.outputs]
    assert len(version.validation) >= 2
    for case in version.validation:
        feeds = {name: np.asarray(value, dtype=np.float32) for name, value in case.inputs.items()}
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
        for name, expected in case.expected.items():
            np.testing.assert_allclose(outputs[name], np.asarray(expected), rtol=0, atol=case.tolerance, err_msg=case.name)


def weight_types(data: bytes) -> set[str]:
    """The element types of the weights the model's Gemm nodes multiply by, seen through any
    DequantizeLinear that feeds them."""
    graph = onnx.load_from_string(data).graph
    produced_by = {output: node for node in graph.node for output in node.output}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    types = set()
    for gemm in (node for node in graph.node if node.op_type == "Gemm"):
        weight = gemm.input[1]
        if weight in produced_by and produced_by[weight].op_type == "DequantizeLinear":
            weight = produced_by[weight].input[0]
        types.add(onnx.helper.tensor_dtype_to_np_dtype(initializers[weight].data_type).name)
    return types


def test_defect_detector_2_ships_fp32_for_amd64_and_a_smaller_int8_for_arm64():
    version = MODELS["defect-detector"].spec.version("2.0.0")
    by_arch = {artifact.platform.arch: artifact for artifact in version.artifacts}
    assert set(by_arch) == {"amd64", "arm64"}
    fp32, int8 = artifact_bytes(by_arch["amd64"].uri), artifact_bytes(by_arch["arm64"].uri)
    assert weight_types(fp32) == {"float32"}
    assert weight_types(int8) == {"int8"}
    assert len(int8) < 0.6 * len(fp32)
    assert by_arch["arm64"].size < by_arch["amd64"].size


@pytest.mark.parametrize("deployment", of_kind(Deployment).values(), ids=lambda d: d.metadata.name)
def test_every_targeted_site_has_an_artifact_of_every_version(deployment: Deployment):
    """Any version a deployment may move to runs on every site it targets."""
    targeted = [site for site in of_kind(Site).values() if matches(deployment.spec.targets, site.metadata.labels)]
    for version in MODELS[deployment.spec.model].spec.versions:
        for site in targeted:
            assert pick_artifact(version.artifacts, site.metadata.labels) is not None, (version.version, site.metadata.name)


@pytest.mark.parametrize("model", MODELS.values(), ids=list(MODELS))
def test_versions_answer_clearly_differently(model: Model):
    """A test can tell from one response which version served it."""
    for older, newer in combinations(model.spec.versions, 2):
        for old_case, new_case in zip(older.validation, newer.validation, strict=True):
            assert old_case.inputs == new_case.inputs
            for name, expected in old_case.expected.items():
                gap = np.abs(np.asarray(expected) - np.asarray(new_case.expected[name])).max()
                # Any response is within tolerance of its version's expected output, so a gap above
                # twice the tolerance already tells them apart; 20 times leaves no doubt (int8
                # artifacts need the loosest tolerance).
                assert gap > 20 * max(old_case.tolerance, new_case.tolerance), (old_case.name, name)


def test_demo_keys_are_a_pair():
    private = trust.load_private_key((REPO / "keys" / "demo.key").read_bytes())
    assert trust.public_key_pem(private) == (REPO / "keys" / "demo.pub").read_bytes()


# --- the build script -------------------------------------------------------------------------------

def test_rebuild_changes_nothing(build_script, tmp_path: Path):
    copy = tmp_path / "fleet"
    shutil.copytree(REPO, copy)
    assert build_script.build(copy) == []
    for path in REPO.rglob("*"):
        if path.is_file():
            assert (copy / path.relative_to(REPO)).read_bytes() == path.read_bytes(), path


def test_build_from_scratch_reproduces_models_with_a_new_key(build_script, tmp_path: Path):
    changed = build_script.build(tmp_path)
    assert tmp_path / "keys" / "demo.key" in changed
    new_key = trust.load_public_key((tmp_path / "keys" / "demo.pub").read_bytes(), "new")
    assert new_key.key_id != trust.load_public_key((REPO / "keys" / "demo.pub").read_bytes(), "old").key_id
    for onnx_path in REPO.rglob("*.onnx"):
        rebuilt = tmp_path / onnx_path.relative_to(REPO)
        assert rebuilt.read_bytes() == onnx_path.read_bytes()
        signature = rebuilt.with_name(rebuilt.name + ".sig").read_bytes()
        trust.verify_cosign(hashlib.sha256(rebuilt.read_bytes()).digest(), signature, [new_key])
    for model_yaml in REPO.rglob("model.yaml"):
        assert (tmp_path / model_yaml.relative_to(REPO)).read_bytes() == model_yaml.read_bytes()


def test_rebuild_re_signs_only_a_signature_that_no_longer_verifies(build_script, tmp_path: Path, demo_key):
    copy = tmp_path / "fleet"
    shutil.copytree(REPO, copy)
    [artifact] = MODELS["fraud-score"].spec.versions[0].artifacts
    damaged = copy / artifact.signature.uri
    damaged.write_bytes(b"not a signature\n")
    assert build_script.build(copy) == [damaged]
    data = (copy / artifact.uri).read_bytes()
    trust.verify_cosign(hashlib.sha256(data).digest(), damaged.read_bytes(), [demo_key])
