"""Releasing a user's own model with the CLI alone: `init`, `add-version`, `validate`, and real
site agents (processes, a real git smart-HTTP server on loopback, onnxruntime) that deploy and
serve what was added. Bad inputs are refused with a reason and leave the repo as it was."""

from __future__ import annotations

import difflib
import hashlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from reconciler import trust
from reconciler.cli.main import main
from reconciler.devtools.githttp import GitHttpServer, commit_and_push, init_bare_repo, run_git
from reconciler.devtools.onnx_builder import dense_model, dense_reference
from reconciler.devtools.processes import free_port, stop_all
from reconciler.errors import Stalled
from reconciler.gitdoor.source import GitSource
from reconciler.status.gitref import StatusRefs
from reconciler.trust.signing import sign_file

N_IN, N_OUT = 3, 2
ROWS = [[0.1, 0.2, 0.3], [1.0, -0.5, 0.25]]
TIMEOUT = 120


# --- a user's own model: numpy weights, ONNX bytes, and cases from the numpy reference --------------

def user_model(directory: Path, name: str, seed: int, n_in: int = N_IN) -> tuple[Path, Path, list]:
    """An ONNX file built from seeded numpy weights and a cases file whose expected outputs come
    from the numpy reference of the same weights (never from running the candidate)."""
    rng = np.random.default_rng(seed)
    layers = [(rng.normal(size=(n_in, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32), "relu"),
              (rng.normal(size=(4, N_OUT)).astype(np.float32), rng.normal(size=N_OUT).astype(np.float32), "softmax")]
    model = directory / f"{name}.onnx"
    model.write_bytes(dense_model(layers, input_name="x", output_name="y"))
    rows = [row[:n_in] + [0.0] * (n_in - len(row)) for row in ROWS]
    cases = directory / f"{name}-cases.yaml"
    expected = dense_reference(layers, np.asarray(rows, dtype=np.float32)).tolist()
    cases.write_text(yaml.safe_dump([{"name": "two-rows", "inputs": {"x": rows}, "expected": {"y": expected},
                                      "tolerance": 1e-4}]))
    return model, cases, layers


def key_pair(directory: Path, name: str = "release") -> tuple[Path, Path]:
    key = trust.generate_private_key()
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    private.write_bytes(trust.private_key_pem(key))
    public.write_bytes(trust.public_key_pem(key))
    return private, public


def reconciler(*args: str | Path) -> int:
    return main([str(arg) for arg in args])


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def deployment_yaml(model: str, version: str) -> str:
    return (f"# yaml-language-server: $schema=../schemas/deployment.schema.json\n"
            f"apiVersion: reconciler/v1\nkind: Deployment\nmetadata:\n  name: {model}\n"
            f"spec:\n  model: {model}\n  version: {version}\n")


COMMENTED_MODEL = """\
# yaml-language-server: $schema=../../schemas/model.schema.json
# Our churn classifier. Owned by the data team; ask in #ml-releases before changing it.
apiVersion: reconciler/v1
kind: Model
metadata:
  name: churn          # also the Deployment's name
  labels:
    team: data
spec:
  description: 'Probability that a customer leaves within 30 days, from three
    normalised features (tenure, spend, support tickets).'
  interface:
    inputs:
      - {{name: x, dtype: float32, shape: [-1, 3]}}
    outputs:
      - {{name: y, dtype: float32, shape: [-1, 2]}}   # [stays, leaves]
  versions:
    # 1.0.0: the first model, trained on 2025 data
    - version: 1.0.0
      artifacts:
        - uri: models/churn/1.0.0/churn.onnx
          digest: {digest}
          size: {size}
          signature:
            uri: models/churn/1.0.0/churn.onnx.sig
            format: cosign
      # no validation cases yet: see ticket ML-12
"""


def deploy_to_one_site(fleet: Path, tmp_path: Path, trust_key: Path) -> dict:
    """The released churn 1.1.0, deployed: the fleet validates, and one real site (`run --once`
    from a git smart-HTTP server) converges on it; its status record."""
    (fleet / "deployments").mkdir()
    (fleet / "deployments" / "churn.yaml").write_text(deployment_yaml("churn", "1.1.0"))
    assert reconciler("validate", fleet) == 0
    init_bare_repo(tmp_path / "srv", "fleet", source_dir=fleet)
    with GitHttpServer(tmp_path / "srv") as server:
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", "run", "--once", "--repo", server.url("fleet"), "--site", "store-1",
             "--state", str(tmp_path / "site"), "--trust-key", str(trust_key)],
            capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture
def commented_fleet(tmp_path: Path) -> dict:
    """A fresh fleet (`init`) whose Model file was written by a person: comments, a folded string,
    flow-style tensors, sequences indented under their keys."""
    fleet = tmp_path / "fleet"
    assert reconciler("init", fleet, "--site", "store-1") == 0
    private, public = key_pair(tmp_path)
    first, _, _ = user_model(tmp_path, "churn", seed=1)
    artifact = fleet / "models" / "churn" / "1.0.0" / "churn.onnx"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(first.read_bytes())
    artifact.with_name("churn.onnx.sig").write_bytes(sign_file(artifact, trust.load_private_key(private.read_bytes()))
                                                     .cosign_signature)
    data = artifact.read_bytes()
    (fleet / "models" / "churn" / "model.yaml").write_text(COMMENTED_MODEL.format(
        digest=f"sha256:{hashlib.sha256(data).hexdigest()}", size=len(data)))
    new_dir = tmp_path / "candidate"
    new_dir.mkdir()
    candidate, cases, layers = user_model(new_dir, "churn", seed=2)
    assert reconciler("validate", fleet) == 0
    return {"fleet": fleet, "key": private, "pub": public, "candidate": candidate, "cases": cases,
            "layers": layers, "tmp": tmp_path}


# --- add-version on a commented file, then a real site deploys it ------------------------------------

def test_add_version_changes_only_the_new_versions_lines_and_a_real_site_deploys_it(commented_fleet, tmp_path):
    fleet = commented_fleet["fleet"]
    model_file = fleet / "models" / "churn" / "model.yaml"
    before = model_file.read_text()
    assert reconciler("add-version", "churn", "1.1.0", commented_fleet["candidate"], "--repo", fleet,
                      "--key", commented_fleet["key"], "--trust-key", commented_fleet["pub"],
                      "--cases", commented_fleet["cases"]) == 0

    after = model_file.read_text()
    diff = [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if not line.startswith(("---", "+++", "@@"))]
    assert diff and all(line.startswith("+") for line in diff), diff  # lines added, none changed or removed
    assert after.startswith(before)  # the last version ends the file, so the new one follows it
    added = "\n".join(line[1:] for line in diff)
    assert added.splitlines()[0] == "    - version: 1.1.0"  # the file's own indentation
    entry = yaml.safe_load(textwrap.dedent(added))[0]
    data = (fleet / "models" / "churn" / "1.1.0" / "churn.onnx").read_bytes()
    assert data == commented_fleet["candidate"].read_bytes()
    assert entry["artifacts"] == [{
        "uri": "models/churn/1.1.0/churn.onnx", "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
        "size": len(data), "signature": {"uri": "models/churn/1.1.0/churn.onnx.sig", "format": "cosign"}}]
    assert entry["validation"] == yaml.safe_load(commented_fleet["cases"].read_text())
    record = deploy_to_one_site(fleet, tmp_path, commented_fleet["pub"])
    assert record["deployments"]["churn"]["activeVersion"] == "1.1.0"
    assert record["deployments"]["churn"]["state"] == "success"


def test_a_remote_artifact_is_recorded_and_a_bundle_signs_it(commented_fleet):
    """With --uri the file stays where the user uploads it; the signature (here a Sigstore bundle)
    goes into the repo beside where the version would live, and verifies with the sites' key."""
    fleet = commented_fleet["fleet"]
    uri = "https://models.example.com/churn/1.1.0/churn.onnx"
    assert reconciler("add-version", "churn", "1.1.0", commented_fleet["candidate"], "--repo", fleet,
                      "--key", commented_fleet["key"], "--uri", uri, "--signature-format", "sigstore-bundle") == 0
    version = yaml.safe_load((fleet / "models" / "churn" / "model.yaml").read_text())["spec"]["versions"][-1]
    [artifact] = version["artifacts"]
    assert artifact["uri"] == uri and "validation" not in version
    assert artifact["signature"] == {"uri": "models/churn/1.1.0/churn.onnx.sigstore.json", "format": "sigstore-bundle"}
    assert sorted(p.name for p in (fleet / "models" / "churn" / "1.1.0").iterdir()) == ["churn.onnx.sigstore.json"]
    roots = trust.TrustRoots(keys=(trust.load_public_key(commented_fleet["pub"].read_bytes(), "release.pub"),))
    signature = (fleet / artifact["signature"]["uri"]).read_bytes()
    digest = hashlib.sha256(commented_fleet["candidate"].read_bytes()).digest()
    assert trust.verify_artifact_signature(digest, "churn.onnx", signature, "sigstore-bundle", roots).key is not None
    assert reconciler("validate", fleet) == 0


# --- bad inputs: refused with a reason, the repo unchanged ---------------------------------------------

def wrong_width_model(ctx: dict) -> list:
    model, _, _ = user_model(ctx["tmp"], "wide", seed=3, n_in=4)
    return ["churn", "1.1.0", model]


def lfs_pointer(ctx: dict) -> list:
    pointer = ctx["tmp"] / "pointer.onnx"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 123\n")
    return ["churn", "1.1.0", pointer]


def wrong_expected(ctx: dict) -> list:
    cases = yaml.safe_load(ctx["cases"].read_text())
    cases[0]["expected"]["y"][0][0] += 0.5
    bad = ctx["tmp"] / "bad-cases.yaml"
    bad.write_text(yaml.safe_dump(cases))
    return ["churn", "1.1.0", ctx["candidate"], "--cases", bad]


def not_cases(ctx: dict) -> list:
    bad = ctx["tmp"] / "not-cases.yaml"
    bad.write_text("inputs: {x: [[1, 2, 3]]}\n")
    return ["churn", "1.1.0", ctx["candidate"], "--cases", bad]


def public_key_as_key(ctx: dict) -> list:
    return ["churn", "1.1.0", ctx["candidate"], "--override-key", ctx["pub"]]


def untrusted_key(ctx: dict) -> list:
    other, _ = key_pair(ctx["tmp"], "other")
    return ["churn", "1.1.0", ctx["candidate"], "--override-key", other, "--trust-key", ctx["pub"]]


def file_in_the_way(ctx: dict) -> list:
    target = ctx["fleet"] / "models" / "churn" / "1.1.0" / "churn.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"someone else's file")
    return ["churn", "1.1.0", ctx["candidate"]]


BAD_INPUTS = [
    # (id, arguments after add-version, exit code, reason or words in the message)
    ("unknown-model", lambda ctx: ["chrun", "1.1.0", ctx["candidate"]], 1, "UnknownModel: no Model named 'chrun'"),
    ("did-you-mean", lambda ctx: ["chrun", "1.1.0", ctx["candidate"]], 1, "did you mean 'churn'?"),
    ("existing-version", lambda ctx: ["churn", "1.0.0", ctx["candidate"]], 1, "VersionExists"),
    ("new-model-that-exists", lambda ctx: ["churn", "1.1.0", ctx["candidate"], "--new-model"], 1, "ModelExists"),
    ("bad-version-name", lambda ctx: ["churn", "1.1.0/../x", ctx["candidate"]], 2, "is not a version name"),
    ("missing-file", lambda ctx: ["churn", "1.1.0", ctx["tmp"] / "nope.onnx"], 1, "ArtifactMissing"),
    ("lfs-pointer", lfs_pointer, 1, "ArtifactIsLfsPointer"),
    ("not-onnx", lambda ctx: ["churn", "1.1.0", ctx["cases"]], 1, "ModelLoadFailed"),
    ("wrong-interface", wrong_width_model, 1, "ModelInterfaceMismatch: "),
    ("wrong-expected-output", wrong_expected, 1, "ValidationFailed"),
    ("cases-not-a-list", not_cases, 1, "CasesInvalid"),
    ("public-key-as-signing-key", public_key_as_key, 1, "SigningKeyInvalid"),
    ("key-the-sites-do-not-trust", untrusted_key, 1, "SigningKeyNotTrusted"),
    ("unsupported-uri", lambda ctx: ["churn", "1.1.0", ctx["candidate"], "--uri", "s3://bucket/churn/1.1.0/model.onnx"],
     1, "ArtifactSchemeUnsupported"),
    ("file-in-the-way", file_in_the_way, 1, "ArtifactExists"),
]


@pytest.mark.parametrize(("make_args", "code", "says"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_are_refused_and_nothing_changes(commented_fleet, capsys, make_args, code, says):
    args = make_args(commented_fleet)
    key = args.pop(args.index("--override-key") + 1) if "--override-key" in args else commented_fleet["key"]
    if "--override-key" in args:
        args.remove("--override-key")
    fleet = commented_fleet["fleet"]
    before = tree(fleet)
    capsys.readouterr()
    assert reconciler("add-version", *args, "--repo", fleet, "--key", key) == code
    err = capsys.readouterr().err
    assert says in err, err
    assert tree(fleet) == before
    assert reconciler("validate", fleet) == 0


def test_an_encrypted_key_with_the_wrong_password_is_refused(commented_fleet, capsys, monkeypatch):
    monkeypatch.setenv("COSIGN_PASSWORD", "right")
    assert reconciler("keygen", "--output-prefix", commented_fleet["tmp"] / "cosign") == 0
    monkeypatch.setenv("COSIGN_PASSWORD", "wrong")
    fleet = commented_fleet["fleet"]
    before = tree(fleet)
    capsys.readouterr()
    assert reconciler("add-version", "churn", "1.1.0", commented_fleet["candidate"], "--repo", fleet,
                      "--key", commented_fleet["tmp"] / "cosign.key") == 1
    assert "KeyPasswordWrong" in capsys.readouterr().err
    assert tree(fleet) == before


def test_a_refusal_after_the_files_are_written_puts_every_file_back(commented_fleet, capsys, monkeypatch):
    """The last check runs on the written repo; when it refuses, new files and directories go and
    the Model file is restored."""
    def refuse(*_):
        raise Stalled("FleetInvalid", "the fleet would not validate")

    monkeypatch.setattr("reconciler.cli.add_version.check_result", refuse)
    fleet = commented_fleet["fleet"]
    before = tree(fleet)
    dirs_before = sorted(p for p in fleet.rglob("*") if p.is_dir())
    assert reconciler("add-version", "churn", "1.1.0", commented_fleet["candidate"], "--repo", fleet,
                      "--key", commented_fleet["key"], "--cases", commented_fleet["cases"]) == 1
    assert "FleetInvalid" in capsys.readouterr().err
    assert tree(fleet) == before
    assert sorted(p for p in fleet.rglob("*") if p.is_dir()) == dirs_before


def test_the_last_check_reads_the_written_files_as_a_site_does(commented_fleet):
    from reconciler.cli.add_version import check_result

    fleet = commented_fleet["fleet"]
    roots = trust.TrustRoots(keys=(trust.load_public_key(commented_fleet["pub"].read_bytes(), "release.pub"),))
    check_result(fleet, "churn", "1.0.0", roots)
    other_roots = trust.TrustRoots(keys=(trust.load_public_key(key_pair(commented_fleet["tmp"], "x")[1].read_bytes(),
                                                               "x.pub"),))
    with pytest.raises(Stalled):
        check_result(fleet, "churn", "1.0.0", other_roots)
    artifact = fleet / "models" / "churn" / "1.0.0" / "churn.onnx"
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\x00")
    with pytest.raises(Stalled) as refused:
        check_result(fleet, "churn", "1.0.0", roots)
    assert refused.value.reason == "ArtifactCheckFailed" and "(ArtifactDigestMismatch)" in refused.value.message


# --- init + add-version + validate + two real agents ----------------------------------------------------

SITES = ("store-1", "store-2")


def await_version(refs: StatusRefs, head: str, version: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        records = refs.read_all()
        done = [s for s in SITES if s in records and records[s].observedCommit == head and records[s].state == "success"
                and records[s].deployments.get("churn") and records[s].deployments["churn"].activeVersion == version]
        if len(done) == len(SITES):
            return
        time.sleep(0.3)
    raise AssertionError(f"sites did not converge on {version} at {head[:12]}: {refs.read_all()}")


def infer(port: int) -> tuple[str, np.ndarray]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(ROWS), N_IN], "data": ROWS}]}
    reply = httpx.post(f"http://127.0.0.1:{port}/v2/models/churn/infer", json=body, timeout=10)
    reply.raise_for_status()
    out = reply.json()
    return out["model_version"], np.asarray(out["outputs"][0]["data"]).reshape(len(ROWS), N_OUT)


def test_a_fleet_from_scratch_converges_and_serves_the_users_own_model(tmp_path, monkeypatch, request):
    monkeypatch.setenv("COSIGN_PASSWORD", "release password")
    fleet = tmp_path / "fleet"
    assert reconciler("init", fleet, "--site", "store-1") == 0
    assert reconciler("keygen", "--output-prefix", tmp_path / "release") == 0
    (fleet / "sites" / "store-2.yaml").write_text((fleet / "sites" / "store-1.yaml").read_text()
                                                  .replace("store-1", "store-2"))
    first, first_cases, first_layers = user_model(tmp_path, "churn-1", seed=10)
    assert reconciler("add-version", "churn", "1.0.0", first, "--new-model", "--repo", fleet, "--key",
                      tmp_path / "release.key", "--trust-key", tmp_path / "release.pub", "--cases", first_cases) == 0
    (fleet / "deployments").mkdir()
    (fleet / "deployments" / "churn.yaml").write_text(deployment_yaml("churn", "1.0.0"))
    assert reconciler("validate", fleet) == 0

    with GitHttpServer(tmp_path / "srv") as server:
        init_bare_repo(tmp_path / "srv", "fleet", source_dir=fleet)
        url = server.url("fleet")
        agents = {}
        for site in SITES:
            port = free_port()
            log = (tmp_path / f"{site}.log").open("wb")
            request.addfinalizer(log.close)
            agents[site] = (port, subprocess.Popen(
                [sys.executable, "-m", "reconciler", "run", "--repo", url, "--site", site, "--state",
                 str(tmp_path / "state" / site), "--listen", f"127.0.0.1:{port}", "--interval", "500ms",
                 "--trust-key", str(tmp_path / "release.pub")], stdout=log, stderr=subprocess.STDOUT))
        try:
            refs = StatusRefs(GitSource(url, "main", tmp_path / "observer.git"))
            request.addfinalizer(refs.close)
            clone = tmp_path / "clone"
            run_git(None, "clone", "--quiet", url, str(clone))
            await_version(refs, run_git(clone, "rev-parse", "HEAD"), "1.0.0")
            want = dense_reference(first_layers, np.asarray(ROWS, dtype=np.float32))
            for port, _ in agents.values():
                version, output = infer(port)
                assert version == "1.0.0" and output == pytest.approx(want, abs=1e-4)

            # The next release, from a clone, as a release engineer would make it.
            second, second_cases, second_layers = user_model(tmp_path, "churn-2", seed=20)
            assert reconciler("add-version", "churn", "1.1.0", second, "--repo", clone, "--key",
                              tmp_path / "release.key", "--trust-key", tmp_path / "release.pub",
                              "--cases", second_cases) == 0
            head = commit_and_push(clone, {"deployments/churn.yaml": deployment_yaml("churn", "1.1.0")},
                                   "Release churn 1.1.0")
            await_version(refs, head, "1.1.0")
            want = dense_reference(second_layers, np.asarray(ROWS, dtype=np.float32))
            for port, _ in agents.values():
                version, output = infer(port)
                assert version == "1.1.0" and output == pytest.approx(want, abs=1e-4)
        finally:
            stop_all(process for _, process in agents.values())


def test_cases_that_are_no_list_are_refused_in_a_sentence(commented_fleet, capsys):
    fleet = commented_fleet["fleet"]
    args = not_cases(commented_fleet)
    assert reconciler("add-version", *args, "--repo", fleet, "--key", commented_fleet["key"]) == 1
    err = capsys.readouterr().err
    assert "must hold a list of validation cases" in err and "the file: Input should be a valid list" in err
    assert "errors.pydantic.dev" not in err and "validation error for" not in err
