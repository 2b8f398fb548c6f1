"""A model of several files (ONNX external data) out of one ORAS directory layer in Debian's
docker-registry on 127.0.0.1: a real agent fetches the ONNX file and its weights, each pinned in
the Model document and covered by one model_signing bundle, lays them out in the model's directory,
validates it in the child and serves it. A member missing, a file of other bytes or of another size,
an external-data path that leaves the directory: each refused with its reason while 1.0.0 serves.
The same model with its weights beside it in the fleet repository is served from the commit."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from oci_cosign import sign_legacy
from test_bad_inputs import SITE, V11, served_forecast
from test_oci_agent import REPO, digest_of, pushers, v11, world  # noqa: F401 (world: the module's agent fixture)
from test_oci_archives import push_archive, tar

from reconciler.cli.artifact_check import ArtifactOptions, check_artifacts
from reconciler.devtools.ociregistry import Registry, registry_missing
from reconciler.devtools.onnx_builder import split_external_data
from reconciler.devtools.testing import EXAMPLE, FleetRemote
from reconciler.devtools.trust_fixtures import (
    dsse_bundle,
    encode,
    model_signing_hint,
    model_signing_statement,
)
from reconciler.manifests.loader import load_directory
from reconciler.runtime.server import RuntimeServer, build_app
from reconciler.settings import FetchLimits
from reconciler.trust import TrustRoots, load_private_key, load_public_key

pytestmark = pytest.mark.skipif(registry_missing() is not None, reason=str(registry_missing()))

BUNDLE = "models/demand-forecast/1.1.0/model.sig.json"


def split(fleet: FleetRemote, location: str = "weights.bin") -> tuple[bytes, bytes]:
    """1.1.0's ONNX file with its weights moved out into ``weights.bin``; the ONNX file names them at ``location``."""
    main, files = split_external_data((fleet.clone / V11).read_bytes())
    if location != "weights.bin":
        model = onnx.load_from_string(main)
        for tensor in model.graph.initializer:
            next(e for e in tensor.external_data if e.key == "location").value = location
        main = model.SerializeToString(deterministic=True)
    return main, files["weights.bin"]


def publish(fleet: FleetRemote, registry: Registry, members: dict[str, bytes], main: bytes,
            pinned: dict[str, bytes], **file_fields: object) -> str:
    """``members`` as an ORAS directory ``model/`` tagged multi; 1.1.0 pins ``main`` and the files
    ``pinned`` (``file_fields`` overriding what is pinned), signed by one model_signing bundle.
    Returns the manifest's digest."""
    manifest = push_archive(registry, REPO, "multi", tar(("model", "dir", ""), *((f"model/{n}", "file", d) for n, d in members.items())))
    key = load_private_key((EXAMPLE / "keys" / "demo.key").read_bytes())
    statement = model_signing_statement({"model.onnx": main, **pinned})
    (fleet.clone / BUNDLE).write_bytes(encode(dsse_bundle(key, statement, hint=model_signing_hint(key))))
    files = [{"path": path, "digest": digest_of(data), "size": len(data), **file_fields} for path, data in pinned.items()]
    v11(fleet, uri=f"oci://{registry.host}/{REPO}:multi#model/model.onnx", digest=digest_of(main), size=len(main),
        signature={"uri": BUNDLE, "format": "model-signing"}, files=files)
    return manifest


def member_missing(fleet: FleetRemote, registry: Registry) -> None:
    main, weights = split(fleet)
    publish(fleet, registry, {"model.onnx": main}, main, {"weights.bin": weights})


def file_of_other_bytes(fleet: FleetRemote, registry: Registry) -> None:
    main, weights = split(fleet)
    other = bytes(len(weights))
    publish(fleet, registry, {"model.onnx": main, "weights.bin": other}, main, {"weights.bin": weights})


def file_larger_than_pinned(fleet: FleetRemote, registry: Registry) -> None:
    main, weights = split(fleet)
    publish(fleet, registry, {"model.onnx": main, "weights.bin": weights}, main, {"weights.bin": weights},
            size=len(weights) - 1)


def external_data_leaves_the_directory(fleet: FleetRemote, registry: Registry) -> None:
    main, weights = split(fleet, location="../weights.bin")
    publish(fleet, registry, {"model.onnx": main, "weights.bin": weights}, main, {"weights.bin": weights})


def external_data_not_pinned(fleet: FleetRemote, registry: Registry) -> None:
    main, weights = split(fleet)
    publish(fleet, registry, {"model.onnx": main, "weights.bin": weights}, main, {})


def registry_signature_of_an_archive(fleet: FleetRemote, registry: Registry) -> None:
    """A registry signature chains manifest -> layer digest: a member of an archive layer is no layer."""
    main, weights = split(fleet)
    manifest = publish(fleet, registry, {"model.onnx": main, "weights.bin": weights}, main, {"weights.bin": weights})
    key = load_private_key((EXAMPLE / "keys" / "demo.key").read_bytes())
    sign_legacy(*pushers(registry), key, f"{registry.host}/{REPO}", manifest)
    doc = fleet.model_doc("demand-forecast")
    version = next(v for v in doc["spec"]["versions"] if v["version"] == "1.1.0")
    version["artifacts"][0]["signature"] = {"uri": f"oci://{registry.host}/{REPO}@{manifest}", "format": "registry"}
    fleet.write_model_doc("demand-forecast", doc)


BAD = [
    ("member missing", member_missing, "OciLayerNotFound", "has no file model/weights.bin"),
    ("file of other bytes", file_of_other_bytes, "ArtifactDigestMismatch", "model/weights.bin"),
    ("file larger than pinned", file_larger_than_pinned, "ArtifactTooLarge", "the Model document says"),
    ("external data leaves the directory", external_data_leaves_the_directory, "ModelLoadFailed",
     "leaves the model's directory"),
    ("external data not pinned", external_data_not_pinned, "ModelLoadFailed", "not among its version's files"),
    ("registry signature of an archive", registry_signature_of_an_archive, "OciLayerNotFound", "has no layer"),
]


@pytest.mark.parametrize("mutate,reason,needle", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_multi_file_model_is_refused_and_the_last_good_version_serves(
        world, mutate: Callable[[FleetRemote, Registry], None], reason: str, needle: str) -> None:  # noqa: F811
    fleet, oci, agent, models, good = world
    before = served_forecast(models)
    fleet.reset_to(good)
    mutate(fleet, oci)
    fleet.push(f"bad multi-file model: {reason}", force=True)

    status = agent.reconcile_once().record.deployments["demand-forecast"]

    assert status.reason.startswith(reason) and status.state in ("failure", "error"), status
    assert needle in status.message, status.message
    assert status.activeVersion == "1.0.0"
    assert served_forecast(models) == before and before[0] == "1.0.0"


def test_a_model_with_external_data_from_one_archive_is_validated_and_served(world) -> None:  # noqa: F811
    fleet, oci, agent, models, good = world
    fleet.reset_to(good)
    whole = (fleet.clone / V11).read_bytes()
    main, weights = split(fleet)
    initializers = onnx.load_from_string(main).graph.initializer
    assert initializers and all(t.data_location == onnx.TensorProto.EXTERNAL for t in initializers)
    publish(fleet, oci, {"model.onnx": main, "weights.bin": weights}, main, {"weights.bin": weights})
    fleet.push("1.1.0 as an ONNX file and its external data, one ORAS directory", force=True)

    status = agent.reconcile_once().record.deployments["demand-forecast"]

    assert (status.state, status.activeVersion) == ("success", "1.1.0"), status
    served = models.get("demand-forecast", None)
    directory = served.source.parent
    assert sorted(p.name for p in directory.iterdir()) == ["model.onnx", "weights.bin"]
    assert served.source.read_bytes() == main and (directory / "weights.bin").read_bytes() == weights
    single_file = ort.InferenceSession(whole, providers=["CPUExecutionProvider"])
    x = [[0.8, 1.0, 0.0, 0.0]]
    expected = float(single_file.run(None, {"features": np.array(x, dtype=np.float32)})[0][0, 0])
    with RuntimeServer(build_app(models, site=SITE)) as server:
        answer = httpx.post(f"http://127.0.0.1:{server.port}/v2/models/demand-forecast/infer", json={
            "inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": x}]}).json()
    assert answer["model_version"] == "1.1.0"
    assert answer["outputs"][0]["data"] == pytest.approx([expected])


def test_validate_artifacts_fetch_checks_every_file_as_a_site_would(world) -> None:  # noqa: F811
    fleet, oci, _, _, good = world
    roots = TrustRoots(keys=(load_public_key((EXAMPLE / "keys" / "demo.pub").read_bytes(), "demo.pub"),))
    options = ArtifactOptions(roots=roots, fetch=True, all_versions=True, limits=FetchLimits(retries=1, oci={"plain_http": [oci.host]}))

    def findings() -> list[str]:
        report = check_artifacts(load_directory(fleet.clone).repo, fleet.clone, options, {("demand-forecast", "1.1.0")})
        return [f"{f.severity}: {f.message}" for f in report.findings]

    fleet.reset_to(good)
    main, weights = split(fleet)
    publish(fleet, oci, {"model.onnx": main, "weights.bin": weights}, main, {"weights.bin": weights})
    fleet.push("1.1.0 of two files", force=True)
    assert findings() == []
    fleet.reset_to(good)
    file_of_other_bytes(fleet, oci)
    fleet.push("1.1.0 with other weights", force=True)
    assert [f for f in findings() if f.startswith("error: spec.versions[1].artifacts[0].files[0].digest:")
            and "ArtifactDigestMismatch" in f]
    fleet.reset_to(good)
    external_data_not_pinned(fleet, oci)
    fleet.push("1.1.0 without its weights pinned", force=True)
    assert [f for f in findings() if "artifacts[0].uri" in f and "list its external data in files" in f]


def test_a_model_with_external_data_in_the_fleet_repo_is_served_from_the_commit(world) -> None:  # noqa: F811
    """Repo-relative: the ONNX file and its weights beside it, read from the commit's tree."""
    fleet, _, agent, models, good = world
    fleet.reset_to(good)
    whole = (fleet.clone / V11).read_bytes()
    main, weights = split(fleet)
    (fleet.clone / V11).write_bytes(main)
    (fleet.clone / V11).with_name("weights.bin").write_bytes(weights)
    key = load_private_key((EXAMPLE / "keys" / "demo.key").read_bytes())
    statement = model_signing_statement({"model.onnx": main, "weights.bin": weights})
    (fleet.clone / BUNDLE).write_bytes(encode(dsse_bundle(key, statement, hint=model_signing_hint(key))))
    v11(fleet, digest=digest_of(main), size=len(main), signature={"uri": BUNDLE, "format": "model-signing"},
        files=[{"path": "weights.bin", "digest": digest_of(weights), "size": len(weights)}])
    fleet.push("1.1.0 as an ONNX file and its weights in the repo", force=True)

    status = agent.reconcile_once().record.deployments["demand-forecast"]

    assert (status.state, status.activeVersion) == ("success", "1.1.0"), status
    single_file = ort.InferenceSession(whole, providers=["CPUExecutionProvider"])
    x = np.array([[0.8, 1.0, 0.0, 0.0]], dtype=np.float32)
    assert served_forecast(models) == ("1.1.0", float(single_file.run(None, {"features": x})[0][0, 0]))
