"""The CLI surface as users call it: real processes, exit codes, formats."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reconciler.devtools.testing import EXAMPLE, copy_example, git, git_env


def reconciler(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.fixture
def broken_repo(tmp_path):
    repo = copy_example(tmp_path / "fleet", progressive=False)
    path = repo / "models" / "fraud-score" / "model.yaml"
    path.write_text(path.read_text().replace("digest: sha256:", "digest: sha512:", 1))
    return repo


def test_validate_example_is_clean():
    done = reconciler("validate", str(EXAMPLE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok:")


def test_validate_names_file_and_line(broken_repo):
    done = reconciler("validate", str(broken_repo))
    assert done.returncode == 1
    first = done.stdout.splitlines()[0]
    assert first.startswith("models/fraud-score/model.yaml:") and "digest" in first
    line = int(first.split(":")[1])
    assert "sha512:" in (broken_repo / "models/fraud-score/model.yaml").read_text().splitlines()[line - 1]


def test_validate_json_and_github_formats(broken_repo):
    report = json.loads(reconciler("validate", str(broken_repo), "--format", "json").stdout)
    assert report["valid"] is False and report["errors"] == 1
    assert report["findings"][0]["path"] == "models/fraud-score/model.yaml"
    github = reconciler("validate", str(broken_repo), "--format", "github").stdout
    assert github.startswith("::error file=models/fraud-score/model.yaml,line=")


@pytest.mark.parametrize("args", [["validate", "/nonexistent/dir"], ["run", "--site", "x"], ["nonsense"], []])
def test_usage_errors_exit_2(args):
    assert reconciler(*args).returncode == 2


def test_plan_for_a_fresh_site_text_and_json():
    text = reconciler("plan", "--site", "store-berlin-01", "--repo", str(EXAMPLE))
    assert text.returncode == 0, text.stderr
    assert "deploy   demand-forecast" in text.stdout and "wave=pilot" in text.stdout
    plan = json.loads(reconciler("plan", "--site", "store-berlin-01", "--repo", str(EXAMPLE), "--format", "json").stdout)
    assert {(a["kind"], a["deployment"], a["toVersion"]) for a in plan["actions"]} == {
        ("deploy", "demand-forecast", "1.0.0"), ("deploy", "fraud-score", "3.2.0")}


def test_plan_at_a_revision_of_a_git_repo(tmp_path):
    repo = copy_example(tmp_path / "fleet", progressive=False)
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "first", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo).strip()
    path = repo / "deployments" / "demand-forecast.yaml"
    path.write_text(path.read_text().replace("version: 1.0.0", "version: 1.1.0", 1))
    git("commit", "-qam", "bump", cwd=repo)
    plan = json.loads(reconciler("plan", "--site", "store-boston-01", "--repo", str(repo), "--rev", first,
                                 "--format", "json").stdout)
    assert plan["commit"] == first and plan["actions"][0]["toVersion"] == "1.0.0"
    head = json.loads(reconciler("plan", "--site", "store-boston-01", "--repo", str(repo), "--rev", "main",
                                 "--format", "json").stdout)
    assert head["actions"][0]["toVersion"] == "1.1.0"
    assert reconciler("plan", "--site", "store-boston-01", "--repo", str(repo), "--rev", "nope").returncode == 1


def test_run_once_without_trust_refuses_every_artifact(tmp_path):
    repo = copy_example(tmp_path / "fleet", progressive=False)
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    subprocess.run(["git", "commit", "-qm", "first"], cwd=repo, env=git_env(), check=True)
    done = reconciler("run", "--once", "--repo", str(repo), "--site", "store-boston-01", "--state", str(tmp_path / "s"))
    assert done.returncode == 1
    record = json.loads(done.stdout)
    status = record["deployments"]["demand-forecast"]
    # a site condition (issue 9): reported as an error, never evidence against the version
    assert (status["state"], status["reason"], status["failureKind"]) == ("error", "NoTrustedKeys", "site")
    assert status["activeVersion"] is None


def test_run_once_with_the_demo_key_converges_and_status_shows_it(tmp_path):
    repo = copy_example(tmp_path / "fleet", progressive=False)
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "first", cwd=repo)
    state = tmp_path / "s"
    done = reconciler("run", "--once", "--repo", str(repo), "--site", "store-boston-01", "--state", str(state),
                      "--trust-key", str(EXAMPLE / "keys" / "demo.pub"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deployments"]["demand-forecast"]["activeVersion"] == "1.0.0"
    assert json.loads((state / "state.json").read_text())["site"] == "store-boston-01"
    matrix = json.loads(reconciler("status", "--repo", str(repo), "--format", "json").stdout)
    rows = {row["site"]: row for row in matrix["sites"]}
    assert len(rows) == 12
    assert (rows["store-boston-01"]["state"], rows["store-boston-01"]["stale"]) == ("success", False)
    assert rows["store-boston-01"]["deployments"]["demand-forecast"]["activeVersion"] == "1.0.0"
    assert (rows["store-berlin-01"]["state"], rows["store-berlin-01"]["stale"]) == ("unknown", True)
    text = reconciler("status", "--repo", str(repo)).stdout
    assert text.splitlines()[-1].startswith("12 sites: ")


def test_plan_base_head_shows_the_fleet_impact_as_markdown(tmp_path):
    repo = copy_example(tmp_path / "fleet")
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "first", cwd=repo)
    path = repo / "deployments" / "demand-forecast.yaml"
    path.write_text(path.read_text().replace("version: 1.0.0", "version: 1.1.0", 1))
    git("commit", "-qam", "bump", cwd=repo)
    done = reconciler("plan", "--base", "HEAD~1", "--head", "HEAD", "--repo", str(repo), "--format", "markdown")
    assert done.returncode == 0, done.stderr
    assert "| pilot | 1.0.0 | 1.1.0 | store-berlin-01, store-mumbai-01 |" in done.stdout
    path.write_text(path.read_text().replace("version: 1.1.0", "version: 7.0.0", 1))
    git("commit", "-qam", "typo", cwd=repo)
    blocked = reconciler("plan", "--base", "HEAD~1", "--head", "HEAD", "--repo", str(repo), "--format", "json")
    assert blocked.returncode == 1
    report = json.loads(blocked.stdout)
    assert report["blocked"] and any("7.0.0" in f["message"] for f in report["findings"])
