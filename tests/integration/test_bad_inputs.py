"""Every bad input DESIGN.md names for this path is refused with a clear reason, reported in the
status record, and the site keeps serving its last good version. One real agent (in process, real
registry and onnxruntime), a real git smart-HTTP remote, real artifacts, real signatures."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from onnx import TensorProto, helper, numpy_helper

from reconciler.agent.wiring import build_agent
from reconciler.devtools.onnx_builder import custom_op_model, external_data_model
from reconciler.devtools.testing import EXAMPLE, FleetRemote, git, start_fleet_remote
from reconciler.devtools.trust_fixtures import dsse_bundle, encode, message_bundle, model_signing_statement
from reconciler.runtime.registry import ModelRegistry
from reconciler.settings import SiteConfig
from reconciler.trust import load_private_key, sign_digest

SITE = "store-berlin-01"
DEPLOYMENT_FILE = "deployments/demand-forecast.yaml"
V11 = "models/demand-forecast/1.1.0/model.onnx"


def bump(fleet: FleetRemote) -> None:
    fleet.bump(DEPLOYMENT_FILE, "1.0.0", "1.1.0")


def with_v11_artifact(change: Callable[[dict], None]) -> Callable[[FleetRemote], None]:
    def mutate(fleet: FleetRemote) -> None:
        bump(fleet)
        doc = fleet.model_doc("demand-forecast")
        change(next(v for v in doc["spec"]["versions"] if v["version"] == "1.1.0"))
        fleet.write_model_doc("demand-forecast", doc)
    return mutate


def set_artifact(**fields) -> Callable[[dict], None]:
    return lambda version: version["artifacts"][0].update(fields)


def replace_v11_bytes(data: bytes) -> Callable[[FleetRemote], None]:
    """New bytes at 1.1.0, honestly described and signed by the demo key: only the model is bad."""
    def mutate(fleet: FleetRemote) -> None:
        (fleet.clone / V11).write_bytes(data)
        key = load_private_key((EXAMPLE / "keys" / "demo.key").read_bytes())
        (fleet.clone / (V11 + ".sig")).write_bytes(sign_digest(key, hashlib.sha256(data).digest()))
        with_v11_artifact(set_artifact(digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data)))(fleet)
    return mutate


def append(relative: str, text: str) -> Callable[[FleetRemote], None]:
    def mutate(fleet: FleetRemote) -> None:
        with (fleet.clone / relative).open("a") as out:
            out.write(text)
    return mutate


def add_file(relative: str, text: str) -> Callable[[FleetRemote], None]:
    return lambda fleet: (fleet.clone / relative).write_text(text)


def wrong_expected(version: dict) -> None:
    version["validation"][0]["expected"]["forecast"] = [[-1000.0]]


def hostile_forecast_model(kind: str) -> bytes:
    """The demand-forecast interface (features [n, 4] -> forecast [n, 1]) around a trap that
    depends on the input, so nothing is folded away at load: an endless loop, or a tensor of
    about 40 GB."""
    zero = numpy_helper.from_array(np.zeros(1, np.float32), "zero")
    nodes = [helper.make_node("ReduceSum", ["features"], ["total"], keepdims=1)]
    inits = [zero, numpy_helper.from_array(np.zeros((4, 1), np.float32), "w"),
             numpy_helper.from_array(np.zeros(1, np.float32), "b")]
    if kind == "hang":
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["x_in", "one"], ["x_out"])],
            "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1, 1])],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1, 1])],
            [numpy_helper.from_array(np.ones(1, np.float32), "one")])
        nodes.append(helper.make_node("Loop", ["trips", "cond", "total"], ["trap"], body=body))
        inits += [numpy_helper.from_array(np.array(10**15, np.int64), "trips"), numpy_helper.from_array(np.array(True), "cond")]
    else:
        inits += [numpy_helper.from_array(np.array([1e10], np.float32), "huge"),
                  numpy_helper.from_array(np.array([1], np.int64), "one_dim")]
        nodes += [helper.make_node("Abs", ["total"], ["size0"]), helper.make_node("Add", ["size0", "huge"], ["size1"]),
                  helper.make_node("Cast", ["size1"], ["size2"], to=TensorProto.INT64),
                  helper.make_node("Reshape", ["size2", "one_dim"], ["size"]),
                  helper.make_node("ConstantOfShape", ["size"], ["big"]),
                  helper.make_node("ReduceSum", ["big"], ["trap"], keepdims=1)]
    nodes += [helper.make_node("Mul", ["trap", "zero"], ["nothing"]),
              helper.make_node("Gemm", ["features", "w", "b"], ["linear"]),
              helper.make_node("Add", ["linear", "nothing"], ["forecast"])]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["n", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def resign(relative: str, key=None) -> Callable[[FleetRemote], None]:
    """Replace a signature file: by another key, or with damaged bytes."""
    def mutate(fleet: FleetRemote) -> None:
        bump(fleet)
        path = fleet.clone / relative
        if key is None:
            path.write_bytes(path.read_bytes()[:-8] + b"AAAAAAA=")
        else:
            path.write_bytes(sign_digest(key, hashlib.sha256((fleet.clone / V11).read_bytes()).digest()))
    return mutate


def bundle_of(other: str) -> Callable[[FleetRemote], None]:
    """A Sigstore bundle by the demo key, but over another file's bytes."""
    def mutate(fleet: FleetRemote) -> None:
        key = load_private_key((EXAMPLE / "keys" / "demo.key").read_bytes())
        (fleet.clone / "v11.bundle.json").write_bytes(encode(message_bundle(key, (fleet.clone / other).read_bytes())))
        with_v11_artifact(set_artifact(signature={"uri": "v11.bundle.json", "format": "sigstore-bundle"}))(fleet)
    return mutate


def statement_without(fleet: FleetRemote) -> None:
    """A model_signing DSSE statement by the demo key that lists other files, not model.onnx."""
    key = load_private_key((EXAMPLE / "keys" / "demo.key").read_bytes())
    statement = model_signing_statement({"weights.bin": b"\0" * 8})
    (fleet.clone / "v11.dsse.json").write_bytes(encode(dsse_bundle(key, statement)))
    with_v11_artifact(set_artifact(signature={"uri": "v11.dsse.json", "format": "model-signing"}))(fleet)


def lfs_pointer_at_v11(fleet: FleetRemote) -> None:
    """What a clone without git-lfs installed commits: the pointer, with the manifest unchanged."""
    data = (fleet.clone / V11).read_bytes()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n"
    (fleet.clone / V11).write_text(pointer)
    bump(fleet)


def narrowed_to_a_stranger(version: dict) -> None:
    version["signers"] = {"keys": ["someone-else.pub"]}


GADGET = "apiVersion: reconciler/v1\nkind: Gadget\nmetadata:\n  name: g\nspec: {}\n"
FUTURE = "apiVersion: reconciler/v9\nkind: Site\nmetadata:\n  name: s\n"

BAD_INPUTS = [
    # (id, mutation, status level, reason, text the message must contain)
    ("malformed YAML", append(DEPLOYMENT_FILE, "  targets: [unclosed\n"), "site", "InvalidManifests",
     "deployments/demand-forecast.yaml:"),
    ("schema violation", with_v11_artifact(set_artifact(digest="sha256:not-hex")), "site", "InvalidManifests",
     "digest"),
    ("unknown kind", add_file("extra.yaml", GADGET), "site", "InvalidManifests", "Gadget"),
    ("unknown apiVersion", add_file("future.yaml", FUTURE), "site", "InvalidManifests", "reconciler/v9"),
    ("duplicate names", add_file("deployments/copy.yaml", (EXAMPLE / DEPLOYMENT_FILE).read_text()), "site",
     "InvalidManifests", "already defined"),
    ("dangling model", lambda f: f.edit(DEPLOYMENT_FILE, r"^  model: demand-forecast$", "  model: ghost"),
     "deployment", "ModelNotFound", "ghost"),
    ("dangling version", lambda f: f.bump(DEPLOYMENT_FILE, "1.0.0", "9.9.9"), "deployment", "VersionNotFound",
     "9.9.9"),
    ("digest mismatch", with_v11_artifact(set_artifact(digest="sha256:" + "0" * 64)), "deployment",
     "ArtifactDigestMismatch", "sha256:" + "0" * 64),
    ("size mismatch", with_v11_artifact(lambda v: v["artifacts"][0].update(size=v["artifacts"][0]["size"] + 1)),
     "deployment", "ArtifactSizeMismatch", ""),
    ("missing artifact", with_v11_artifact(set_artifact(uri="models/demand-forecast/1.1.0/gone.onnx")),
     "deployment", "ArtifactNotFound", "gone.onnx"),
    ("path traversal", with_v11_artifact(set_artifact(uri="../../etc/passwd")), "deployment",
     "ArtifactPathEscapes", ""),
    ("bad signature", with_v11_artifact(set_artifact(
        signature={"uri": "models/demand-forecast/1.0.0/model.onnx.sig", "format": "cosign"})),
     "deployment", "SignatureInvalid", "demo.pub"),
    ("corrupt ONNX", replace_v11_bytes(b"\x08\x07garbage that is not a model" * 20), "deployment",
     "ModelLoadFailed", ""),
    ("validation case fails", with_v11_artifact(wrong_expected), "deployment", "ValidationFailed", "forecast"),
    ("artifact larger than its manifest says", with_v11_artifact(lambda v: v["artifacts"][0].update(size=v["artifacts"][0]["size"] - 1)),
     "deployment", "ArtifactTooLarge", ""),
    ("tampered signature", resign(V11 + ".sig"), "deployment", "Signature", ""),  # Malformed or Invalid
    ("signed by an untrusted key", resign(V11 + ".sig", ec.generate_private_key(ec.SECP256R1())), "deployment",
     "SignatureInvalid", "demo.pub"),
    ("bundle for another artifact", bundle_of("models/demand-forecast/1.0.0/model.onnx"), "deployment",
     "BundleDigestMismatch", ""),
    ("DSSE statement missing the file", statement_without, "deployment", "StatementMissingFile", "model.onnx"),
    ("version narrows signers to an unknown key", with_v11_artifact(narrowed_to_a_stranger), "deployment",
     "NoTrustedSigners", ""),
    ("missing signature file", with_v11_artifact(set_artifact(signature={"uri": "models/none.sig"})), "deployment",
     "ArtifactNotFound", "none.sig"),
    ("external-data ONNX", replace_v11_bytes(external_data_model(np.ones((4, 1)))), "deployment", "ModelLoadFailed",
     "external"),
    ("custom-op ONNX", replace_v11_bytes(custom_op_model()), "deployment", "ModelLoadFailed", "Mystery"),
    ("model hangs in validation", replace_v11_bytes(hostile_forecast_model("hang")), "deployment",
     "ValidationTimeout", ""),
    ("model exhausts memory in validation", replace_v11_bytes(hostile_forecast_model("memory")), "deployment",
     "Validation", "memory"),
    ("Git LFS pointer in place of the model", lfs_pointer_at_v11, "deployment", "ArtifactIsLfsPointer",
     "this is a Git LFS pointer"),
    ("s3:// artifact", with_v11_artifact(set_artifact(uri="s3://bucket/forecast/1.1.0/model.onnx")), "deployment",
     "ArtifactSchemeUnsupported", "sites cannot fetch s3://"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    fleet = start_fleet_remote(root)
    registry = ModelRegistry()
    config = SiteConfig(site=SITE, repo=fleet.url, state=root / "state", interval="1s",
                        trust_keys=[EXAMPLE / "keys" / "demo.pub"],
                        validation={"timeout": "8s", "memoryBytes": 1 << 30})
    agent = build_agent(config, registry)
    agent.start()
    good = git("rev-parse", "HEAD", cwd=fleet.clone).strip()
    result = agent.reconcile_once()
    assert result.record.state == "success", result.record
    yield fleet, agent, registry, good
    agent.stop()
    fleet.server.stop()


def served_forecast(registry: ModelRegistry) -> tuple[str, float]:
    served = registry.get("demand-forecast", None)
    x = np.array([[0.8, 1.0, 0.0, 0.0]], dtype=np.float32)
    return served.version, float(served.session.run(None, {"features": x})[0][0, 0])


@pytest.mark.parametrize("mutate,level,reason,needle", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_and_last_good_keeps_serving(world, mutate, level, reason, needle):
    fleet, agent, registry, good = world
    before = served_forecast(registry)
    fleet.reset_to(good)
    mutate(fleet)
    bad = fleet.push(f"bad input: {reason}", force=True)

    result = agent.reconcile_once()

    record = result.record
    assert record.observedCommit == bad
    if level == "site":
        assert (record.state, record.reason) == ("error", reason)
        message = record.message
    else:
        status = record.deployments["demand-forecast"]
        assert status.reason.startswith(reason) and status.state in ("failure", "error"), status
        assert status.activeVersion == "1.0.0"
        message = status.message
    assert needle in message
    assert served_forecast(registry) == before == ("1.0.0", pytest.approx(24.704109, abs=1e-4))
    assert agent.state_dir.load(SITE).appliedCommit == good
    assert agent.reconcile_once().noop  # a refused commit is not retried until the repo changes
