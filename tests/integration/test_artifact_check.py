"""Issue 10: broken fleets caught before the merge. Each fleet of the table breaks one thing a
site would refuse after the merge; ``validate --artifacts`` must name the file, the line of the
field at fault and what to do, and ``plan --base/--head`` must report the change as blocked.

The fleets are real: ONNX models built from numpy weights, cosign signatures by a real key, a
real git repository for the plan, and validation in the sites' own child process."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from reconciler import trust
from reconciler.cli.main import main
from reconciler.delivery.plan import target_for
from reconciler.devtools.onnx_builder import (
    custom_op_model,
    dense_model,
    dense_reference,
    external_data_model,
)
from reconciler.devtools.testing import EXAMPLE, write_tree
from reconciler.devtools.trust_fixtures import IDENTITY, ISSUER, LocalSigstore
from reconciler.manifests.loader import load_directory
from reconciler.status.gitref import STATUS_FILE, record_json, status_ref
from reconciler.status.record import DeploymentStatus, StatusRecord

Files = dict[str, str | bytes]
ONE = [(np.array([[0.5], [0.25]]), np.array([0.1]), None)]
TWO = [(np.array([[1.0], [2.0]]), np.array([0.0]), None)]
ONES = np.array([[1.0, 1.0]])
MODEL = "models/m/model.yaml"
DEPLOYMENT = "deployments/d.yaml"
KEY = trust.generate_private_key()
OTHER_KEY = trust.generate_private_key()

SITES = """\
apiVersion: reconciler/v1
kind: Site
metadata: {name: s1, labels: {region: eu, arch: amd64}}
---
apiVersion: reconciler/v1
kind: Site
metadata: {name: s2, labels: {region: us, arch: arm64}}
"""

DEPLOYMENT_TEXT = """\
apiVersion: reconciler/v1
kind: Deployment
metadata:
  name: d
spec:
  model: m
  version: {version}
  targets: {{}}
  rollout:
    waves:
      - name: pilot
        selector: {{matchLabels: {{region: eu}}}}
      - name: rest
        percent: 100
"""

MODEL_TEXT = """\
apiVersion: reconciler/v1
kind: Model
metadata:
  name: m
spec:
  interface:
    inputs:
      - name: x
        dtype: float32
        shape: [-1, 2]
    outputs:
      - name: y
        dtype: float32
        shape: [-1, 1]
  versions:
    - version: 1.0.0
      artifacts:
        - uri: models/m/1.0.0/model.onnx
          digest: {digest1}
          size: {size1}
          signature: {{uri: models/m/1.0.0/model.onnx.sig}}
      validation:
        - name: ones
          inputs: {{x: [[1.0, 1.0]]}}
          expected: {{y: [[{expected1}]]}}
    - version: 2.0.0
      artifacts:
        - uri: models/m/2.0.0/model.onnx
          digest: {digest2}
          size: {size2}
          signature:
            uri: models/m/2.0.0/model.onnx.sig
      validation:
        - name: ones
          inputs: {{x: [[1.0, 1.0]]}}
          expected: {{y: [[{expected2}]]}}
"""


def onnx(layers, input_name: str = "x") -> bytes:
    return dense_model(layers, input_name=input_name, output_name="y")


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def signature(data: bytes, key=KEY) -> bytes:
    return trust.sign_digest(key, hashlib.sha256(data).digest())


def good_fleet(version: str = "2.0.0") -> Files:
    """Two versions of one model, deployed at ``version``; every check passes."""
    one, two = onnx(ONE), onnx(TWO)
    model = MODEL_TEXT.format(digest1=digest(one), size1=len(one), expected1=round(float(dense_reference(ONE, ONES)[0, 0]), 6),
                              digest2=digest(two), size2=len(two), expected2=round(float(dense_reference(TWO, ONES)[0, 0]), 6))
    return {"fleet.yaml": "apiVersion: reconciler/v1\nkind: Fleet\nmetadata: {name: f}\n", "sites/sites.yaml": SITES,
            DEPLOYMENT: DEPLOYMENT_TEXT.format(version=version), MODEL: model,
            "models/m/1.0.0/model.onnx": one, "models/m/1.0.0/model.onnx.sig": signature(one),
            "models/m/2.0.0/model.onnx": two, "models/m/2.0.0/model.onnx.sig": signature(two)}


# --- what each broken fleet changes -------------------------------------------------------------

def edit(path: str, old: str, new: str) -> Callable[[Files], Files]:
    def apply(files: Files) -> Files:
        text = files[path]
        assert isinstance(text, str) and text.count(old) == 1, f"{old!r} not once in {path}"
        return {**files, path: text.replace(old, new)}
    return apply


def v2(field: str, value: str) -> Callable[[Files], Files]:
    """A field of version 2.0.0's artifact, by its line prefix."""
    def apply(files: Files) -> Files:
        lines = files[MODEL].splitlines(keepends=True)
        index = next(i for i, line in enumerate(lines) if i >= 25 and line.strip().startswith(f"{field}:"))
        lines[index] = lines[index].split(":", 1)[0] + f": {value}\n"
        return {**files, MODEL: "".join(lines)}
    return apply


def without(path: str) -> Callable[[Files], Files]:
    return lambda files: {k: v for k, v in files.items() if k != path}


def model_2(data: bytes, signed: bool = True) -> Callable[[Files], Files]:
    """Version 2.0.0 becomes ``data``, with a correct digest, size and signature."""
    def apply(files: Files) -> Files:
        files = {**files, "models/m/2.0.0/model.onnx": data}
        if signed:
            files["models/m/2.0.0/model.onnx.sig"] = signature(data)
        return v2("size", str(len(data)))(v2("digest", digest(data))(files))
    return apply


def chain(*changes: Callable[[Files], Files]) -> Callable[[Files], Files]:
    def apply(files: Files) -> Files:
        for change in changes:
            files = change(files)
        return files
    return apply


def swap_bytes(path: str, make: Callable[[Files], bytes]) -> Callable[[Files], Files]:
    return lambda files: {**files, path: make(files)}


def lfs_pointer(files: Files) -> bytes:
    data = files["models/m/2.0.0/model.onnx"]
    return f"version https://git-lfs.github.com/spec/v1\noid {digest(data)}\nsize {len(data)}\n".encode()


ARM_ARTIFACT = ("            uri: models/m/2.0.0/model.onnx.sig\n"
                "        - uri: models/m/2.0.0/model.onnx\n"
                f"          digest: sha256:{'0' * 64}\n"
                "          size: 9\n"
                "          signature: {uri: models/m/2.0.0/model.onnx.sig}\n"
                "          platform: {arch: arm64}\n")
VERSION_FLAG = '{"flags": {"m-version": {"state": "ENABLED", "variants": {"old": "1.0.0", "new": "2.0.0"}, ' \
               '"defaultVariant": "old"}}}'
TWO_WIDE = [(np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([0.0, 0.0]), None)]

# (name, change to the good fleet, file, line, field, words of the finding, words of what to do)
BROKEN = [
    ("model.onnx missing (forgotten git add)", without("models/m/2.0.0/model.onnx"),
     MODEL, 28, "spec.versions[1].artifacts[0].uri", "no such file", "git add"),
    (".sig missing", without("models/m/2.0.0/model.onnx.sig"),
     MODEL, 32, "spec.versions[1].artifacts[0].signature.uri", "no such file", "reconciler sign"),
    ("digest of the wrong file", lambda f: v2("digest", digest(f["models/m/1.0.0/model.onnx"]))(f),
     MODEL, 29, "spec.versions[1].artifacts[0].digest", "ArtifactDigestMismatch", "set digest to its digest"),
    ("size one too many", lambda f: v2("size", str(len(f["models/m/2.0.0/model.onnx"]) + 1))(f),
     MODEL, 30, "spec.versions[1].artifacts[0].size", "ArtifactSizeMismatch", "the file has"),
    ("size one too few", lambda f: v2("size", str(len(f["models/m/2.0.0/model.onnx"]) - 1))(f),
     MODEL, 30, "spec.versions[1].artifacts[0].size", "ArtifactTooLarge", "the file has"),
    ("signature of another file", swap_bytes("models/m/2.0.0/model.onnx.sig", lambda f: f["models/m/1.0.0/model.onnx.sig"]),
     MODEL, 32, "spec.versions[1].artifacts[0].signature.uri", "unsigned by any given root", "reconciler sign"),
    ("signed by a key no site trusts",
     swap_bytes("models/m/2.0.0/model.onnx.sig", lambda f: signature(f["models/m/2.0.0/model.onnx"], OTHER_KEY)),
     MODEL, 32, "spec.versions[1].artifacts[0].signature.uri", "SignatureInvalid", "key the sites trust"),
    ("signature not a signature", swap_bytes("models/m/2.0.0/model.onnx.sig", lambda f: b"not a signature\n"),
     MODEL, 32, "spec.versions[1].artifacts[0].signature.uri", "SignatureMalformed", "reconciler sign"),
    ("gs:// URI", v2("- uri", "gs://bucket/m/2.0.0/model.onnx"),
     MODEL, 28, "spec.versions[1].artifacts[0].uri", "sites cannot fetch gs://", "oci://"),
    ("s3:// URI", v2("- uri", "s3://bucket/m/2.0.0/model.onnx"),
     MODEL, 28, "spec.versions[1].artifacts[0].uri", "sites cannot fetch s3://", "repo-relative path"),
    ("absolute path", v2("- uri", "/etc/hostname"),
     MODEL, 28, "spec.versions[1].artifacts[0].uri", "ArtifactPathEscapes", "inside the repository"),
    ("../ out of the repository", v2("- uri", "../outside/model.onnx"),
     MODEL, 28, "spec.versions[1].artifacts[0].uri", "outside the repository", "inside the repository"),
    ("file:// to a file the sites lack", v2("- uri", "file:///nonexistent/reconciler/model.onnx"),
     MODEL, 28, "spec.versions[1].artifacts[0].uri", "no such file", "correct uri"),
    ("interface dtype differs from the model", edit(MODEL, "dtype: float32\n        shape: [-1, 2]", "dtype: int64\n        shape: [-1, 2]"),
     MODEL, 9, "spec.interface.inputs[0].dtype", "dtype int64 expected, model has float32", "make the interface say"),
    ("interface input name differs from the model", model_2(onnx(TWO, input_name="features")),
     MODEL, 8, "spec.interface.inputs[0].name", "input 'x' is not in the model (it has features)", "make the interface say"),
    ("model output wider than the interface", model_2(onnx(TWO_WIDE)),
     MODEL, 14, "spec.interface.outputs[0].shape", "shape [-1, 1] expected", "make the interface say"),
    ("validation case of the wrong width", edit(MODEL, "x: [[1.0, 1.0]]}\n          expected: {y: [[3.0]]", "x: [[1.0, 1.0, 1.0]]}\n          expected: {y: [[3.0]]"),
     MODEL, 35, "spec.versions[1].validation[0].inputs.x", "has shape [1, 3]", "give the case values of that shape"),
    ("wrong expected value", edit(MODEL, "expected: {y: [[3.0]]}", "expected: {y: [[4.0]]}"),
     MODEL, 36, "spec.versions[1].validation[0].expected.y", "differs by 1 > tolerance", "correct the expected value"),
    ("Git LFS pointer instead of the model", swap_bytes("models/m/2.0.0/model.onnx", lfs_pointer),
     MODEL, 28, "spec.versions[1].artifacts[0].uri", "this is a Git LFS pointer", "git lfs migrate export"),
    ("a site in no wave", edit(DEPLOYMENT, "- name: rest\n        percent: 100", "- name: rest\n        selector: {matchLabels: {region: asia}}"),
     DEPLOYMENT, 10, "spec.rollout.waves", "s2 targeted by deployment 'd' fall in none", "percent 100"),
    ("not an ONNX file at all", model_2(b"\x00garbage, not a protobuf\xff" * 8),
     MODEL, 28, "spec.versions[1].artifacts[0].uri", "ModelLoadFailed", "self-contained ONNX"),
    ("ONNX with external data", model_2(external_data_model(np.ones((2, 1)))),
     MODEL, 28, "spec.versions[1].artifacts[0].uri", "external data", "self-contained ONNX"),
    ("ONNX with an unknown operator domain", model_2(custom_op_model()),
     MODEL, 28, "spec.versions[1].artifacts[0].uri", "operator onnxruntime does not provide", "standard operators"),
    ("version signers the sites do not trust",
     edit(MODEL, "model.onnx.sig\n      validation:", "model.onnx.sig\n      signers: {keys: [someone-else]}\n      validation:"),
     MODEL, 33, "spec.versions[1].signers", "NoTrustedSigners", "name a signer the sites trust"),
    ("broken version chosen by a flag variant",
     chain(edit(DEPLOYMENT, "version: 2.0.0", "version: {flag: m-version}"),
           lambda f: {**f, "flags/fleet.flagd.json": VERSION_FLAG},
           lambda f: v2("digest", digest(f["models/m/1.0.0/model.onnx"]))(f)),
     MODEL, 29, "spec.versions[1].artifacts[0].digest", "ArtifactDigestMismatch", "set digest"),
    ("broken platform variant", edit(MODEL, "            uri: models/m/2.0.0/model.onnx.sig\n", ARM_ARTIFACT),
     MODEL, 35, "spec.versions[1].artifacts[1].size", "ArtifactTooLarge", "the file has 1"),
]


@pytest.fixture(scope="module")
def trust_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "release.pub"
    path.write_bytes(trust.public_key_pem(KEY))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_the_good_fleet_passes_validate_and_plan(tmp_path: Path, trust_key: Path, capsys) -> None:
    repo = write_tree(tmp_path / "fleet", good_fleet())
    code, report = run(capsys, "validate", str(repo), "--artifacts", "--trust-key", str(trust_key), "--format", "json")
    assert (code, report["errors"], report["warnings"]) == (0, 0, 0), report["findings"]
    base_and_head(repo, good_fleet(version="1.0.0"), good_fleet())
    code, impact = run(capsys, "plan", "--repo", str(repo), "--base", "HEAD~1", "--head", "HEAD",
                       "--trust-key", str(trust_key), "--format", "json")
    assert (code, impact["blocked"], impact["artifactsChecked"]) == (0, False, ["m 2.0.0"])
    assert impact["signatures"].startswith("verified against keys: ")
    assert impact["unreported"] == ["s1", "s2"]
    assert [(m["sites"], m["next"]) for m in impact["deployments"][0]["moves"]] == [
        (["s1"], "deploy (FirstWave)"), (["s2"], "wait (WaitingForEarlierWaves)")]


@pytest.mark.parametrize(("change", "path", "line", "field", "words", "todo"), [c[1:] for c in BROKEN],
                         ids=[c[0] for c in BROKEN])
def test_a_broken_fleet_is_caught_at_its_line_and_blocks_the_plan(tmp_path: Path, trust_key: Path, capsys, change,
                                                                   path, line, field, words, todo) -> None:
    broken = change(good_fleet())
    repo = write_tree(tmp_path / "fleet", broken)
    code, report = run(capsys, "validate", str(repo), "--artifacts", "--trust-key", str(trust_key), "--format", "json")
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert code == 1 and errors, report
    at_fault = [f for f in errors if (f["path"], f["line"], f["field"]) == (path, line, field)]
    assert at_fault, [(f["path"], f["line"], f["field"], f["message"]) for f in errors]
    assert at_fault[0]["col"] > 1 and words in at_fault[0]["message"] and todo in at_fault[0]["message"], at_fault

    base_and_head(repo, good_fleet(version="1.0.0"), broken)
    code, impact = run(capsys, "plan", "--repo", str(repo), "--base", "HEAD~1", "--head", "HEAD",
                       "--trust-key", str(trust_key), "--format", "json")
    assert (code, impact["blocked"]) == (1, True)
    assert any((f["path"], f["line"], f["field"]) == (path, line, field) for f in impact["findings"]), impact["findings"]


def base_and_head(repo: Path, base: Files, head: Files) -> None:
    """A git repository at ``repo`` whose last two commits hold ``base`` and ``head``."""
    shutil.rmtree(repo)
    for files, message in ((base, "base"), (head, "head")):
        if (repo / ".git").exists():
            for entry in repo.iterdir():
                if entry.name != ".git":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        write_tree(repo, files)
        if not (repo / ".git").exists():
            git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", message)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_the_example_pull_request_workflow_validates_artifacts_and_plans_with_the_trust_key(tmp_path: Path) -> None:
    """The workflow's own commands, run on a change to the example fleet with the demo key as the
    repository setting: validate checks the artifacts, the plan checks the version that changes."""
    workflow = yaml.safe_load((EXAMPLE / ".github" / "workflows" / "pull-request.yml").read_text())
    steps = {step.get("name"): step for step in workflow["jobs"]["validate-and-plan"]["steps"]}
    assert "vars.RECONCILER_TRUST_KEY" in steps["trust key"]["env"]["TRUST_KEY"]
    repo = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    bumped = (repo / "deployments/demand-forecast.yaml").read_text().replace("version: 1.0.0", "version: 1.1.0", 1)
    (repo / "deployments/demand-forecast.yaml").write_text(bumped)
    git(repo, "commit", "-qam", "bump")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RUNNER_TEMP": str(tmp_path),
           "TRUST_KEY": (EXAMPLE / "keys" / "demo.pub").read_text(), "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}
    for name in ("trust key", "validate manifests and artifacts", "fleet impact"):
        script = steps[name]["run"].replace("${{ github.base_ref }}", "main").replace("origin/main", "HEAD~1")
        done = subprocess.run(["bash", "-e", "-c", script], cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, (name, done.stdout, done.stderr)
    assert (tmp_path / "output").read_text() == "exit=0\n"
    plan = (repo / "plan.md").read_text()
    assert "checked as the sites would: demand-forecast 1.1.0; signatures verified against keys: " in plan
    assert "| pilot | 1.0.0 | 1.1.0 | store-berlin-01, store-mumbai-01 |" in plan


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over real HTTP on loopback, as a model store would serve it."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(("change", "fetch", "expected"), [
    (None, False, ("warning", 28, "give --fetch to check it")),
    (None, True, None),
    (v2("digest", "sha256:" + "1" * 64), True, ("error", 29, "ArtifactDigestMismatch")),
    (v2("- uri", "{url}/models/m/2.0.0/gone.onnx"), True, ("error", 28, "HTTP 404")),
])
def test_http_artifacts_are_fetched_only_when_asked(tmp_path: Path, http_root, trust_key: Path, capsys,
                                                    change, fetch, expected) -> None:
    served, url = http_root
    fleet = v2("- uri", f"{url}/models/m/2.0.0/model.onnx")(good_fleet())
    write_tree(served, {k: v for k, v in fleet.items() if k.startswith("models/m/2.0.0/")})
    fleet = change(fleet) if change else fleet
    fleet[MODEL] = fleet[MODEL].replace("{url}", url)
    repo = write_tree(tmp_path / "fleet", fleet)
    code, report = run(capsys, "validate", str(repo), "--artifacts", "--trust-key", str(trust_key), "--format", "json",
                       *(["--fetch"] if fetch else []))
    found = [(f["severity"], f["line"], f["message"]) for f in report["findings"]]
    if expected is None:
        assert (code, found) == (0, [])
    else:
        severity, line, words = expected
        assert code == (1 if severity == "error" else 0)
        assert [(s, n) for s, n, _ in found] == [(severity, line)] and words in found[0][2], found


def test_keyless_signatures_are_verified_against_the_given_identity(tmp_path: Path, capsys) -> None:
    sigstore = LocalSigstore()
    root = sigstore.write_trusted_root(tmp_path / "trusted_root.json")
    fleet = good_fleet()
    for version in ("1.0.0", "2.0.0"):
        bundle = sigstore.sign_blob(fleet[f"models/m/{version}/model.onnx"])
        fleet[f"models/m/{version}/model.onnx.sig"] = json.dumps(bundle).encode()
    repo = write_tree(tmp_path / "fleet", fleet)
    common = ["validate", str(repo), "--artifacts", "--issuer", ISSUER, "--trusted-root", str(root), "--format", "json"]
    code, report = run(capsys, *common, "--identity", IDENTITY)
    assert (code, report["findings"]) == (0, [])
    code, report = run(capsys, *common, "--identity", "someone-else@example.com")
    assert code == 1
    assert [(f["line"], f["field"]) for f in report["findings"]] == [(32, "spec.versions[1].artifacts[0].signature.uri")]
    assert "unsigned by any given root" in report["findings"][0]["message"]
    assert "CertificateIdentityMismatch" in report["findings"][0]["message"]


@pytest.mark.parametrize(("argv", "words"), [
    (["--artifacts", "--identity", IDENTITY], "--identity and --issuer go together"),
    (["--artifacts", "--trust-key", "/nonexistent/release.pub"], "cannot read trust key /nonexistent/release.pub"),
    (["--trust-key", "/nonexistent/release.pub"], "go with --artifacts"),
    (["--fetch"], "go with --artifacts"),
])
def test_artifact_options_are_refused_when_they_cannot_work(tmp_path: Path, capsys, argv, words) -> None:
    repo = write_tree(tmp_path / "fleet", good_fleet())
    assert main(["validate", str(repo), *argv]) == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize(("prepare", "line", "words"), [
    (lambda repo: None, 28, "is here but not in Git (untracked or ignored)"),
    (lambda repo: (repo / ".gitignore").write_text("*.onnx\n"), 28, "git add it (check .gitignore)"),
    (lambda repo: (repo / ".gitattributes").write_text("*.onnx filter=lfs diff=lfs merge=lfs -text\n"), 28,
     "stored with Git LFS"),
])
def test_a_working_tree_file_that_a_commit_would_not_carry_is_caught(tmp_path: Path, trust_key: Path, capsys,
                                                                     prepare, line, words) -> None:
    """validate runs on a working tree: a model that is there but not committed as it is would
    pass a look at the files and still fail at every site."""
    repo = write_tree(tmp_path / "fleet", good_fleet())
    git(repo, "init", "-q", "-b", "main")
    prepare(repo)
    git(repo, "add", "-A")
    if words != "stored with Git LFS":
        git(repo, "rm", "-q", "--cached", "--ignore-unmatch", "models/m/2.0.0/model.onnx")
    code, report = run(capsys, "validate", str(repo), "--artifacts", "--trust-key", str(trust_key), "--format", "json")
    assert code == 1
    assert [(f["line"], f["field"]) for f in report["findings"]] == [(line, "spec.versions[1].artifacts[0].uri")]
    assert words in report["findings"][0]["message"]


def test_the_plan_reads_the_status_refs_to_say_what_each_site_does_next(tmp_path: Path, trust_key: Path, capsys) -> None:
    """A status record in the repository (as a site writes it) makes the plan's answer: s1 reports
    the new rollout failed, so the abort rule holds it and s2 back (halt), and s2 never reported."""
    repo = tmp_path / "fleet"
    repo.mkdir()
    base_and_head(repo, good_fleet(version="1.0.0"), good_fleet())
    head = load_directory(repo).repo
    rollout = target_for(head, head.deployments["d"], head.sites["s1"], datetime.now(UTC)).rollout_id
    status = DeploymentStatus(model="m", state="failure", version="2.0.0", activeVersion="1.0.0", reason="ValidationFailed",
                              rollout=rollout, since=datetime.now(UTC) - timedelta(minutes=1))
    record = StatusRecord(site="s1", state="failure", reason="ValidationFailed", deployments={"d": status},
                          agentVersion="test", writtenAt=datetime.now(UTC))
    blob = git_out(repo, "hash-object", "-w", "--stdin", data=record_json(record))
    tree = git_out(repo, "mktree", data=f"100644 blob {blob}\t{STATUS_FILE}\n".encode())
    git(repo, "update-ref", status_ref("s1"), git_out(repo, "commit-tree", tree, "-m", "s1: failure"))
    code, impact = run(capsys, "plan", "--repo", str(repo), "--base", "HEAD~1", "--head", "HEAD",
                       "--trust-key", str(trust_key), "--format", "json")
    assert (code, impact["blocked"], impact["unreported"]) == (0, False, ["s2"])
    assert [(m["sites"], m["next"]) for m in impact["deployments"][0]["moves"]] == [
        (["s1"], "halt (FailureThresholdReached)"), (["s2"], "halt (FailureThresholdReached)")]


def git_out(repo: Path, *args: str, data: bytes | None = None) -> str:
    return subprocess.run(["git", *args], cwd=repo, input=data, check=True, capture_output=True).stdout.decode().strip()
