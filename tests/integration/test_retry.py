"""`reconciler rollout retry`: one line of the Deployment's file changes, in a commit of its own,
and the rollout's id with it; what it cannot edit safely it refuses, and nothing is written."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.cli.main import main
from reconciler.delivery.model import SiteState
from reconciler.delivery.plan import plan_site
from reconciler.devtools.testing import copy_example, git
from reconciler.manifests.loader import load_directory

SITE = "store-berlin-01"
NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)


@pytest.fixture
def repo(tmp_path) -> Path:
    root = copy_example(tmp_path / "fleet")
    git("init", "-q", "-b", "main", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "The fleet", cwd=root)
    return root


def rollout_id(repo: Path, deployment: str) -> str:
    plan = plan_site(load_directory(repo).repo, SITE, SiteState(site=SITE), NOW, None)
    return next(a.target.rollout_id for a in plan.actions if a.deployment == deployment)


def test_retry_bumps_the_attempt_in_a_commit_of_its_own(repo, capsys):
    before = rollout_id(repo, "demand-forecast")
    text = (repo / "deployments/demand-forecast.yaml").read_text()
    assert main(["rollout", "retry", "demand-forecast", "--repo", str(repo)]) == 0
    assert "attempt: 1" in capsys.readouterr().out
    diff = git("show", "--format=%s", "--unified=0", "HEAD", cwd=repo)
    assert diff.splitlines()[0] == "Retry the rollout of demand-forecast (attempt 1)"
    assert [line for line in diff.splitlines() if line[:1] in ("+", "-") and line[:3] not in ("+++", "---")] == \
        ["+    attempt: 1"]
    assert load_directory(repo).repo.deployments["demand-forecast"].spec.rollout.attempt == 1
    assert rollout_id(repo, "demand-forecast") != before
    assert main(["rollout", "retry", "demand-forecast", "--repo", str(repo)]) == 0
    lines = (repo / "deployments/demand-forecast.yaml").read_text().splitlines()
    assert lines == text.splitlines()[:16] + ["    attempt: 2"] + text.splitlines()[16:]
    assert git("status", "--porcelain", cwd=repo) == ""


@pytest.mark.parametrize("args,needle", [
    (["ghost"], "no Deployment named 'ghost'"),
    (["fraud-score"], "uses the Fleet's defaultRollout"),
])
def test_what_cannot_be_retried_is_refused_and_nothing_is_written(repo, capsys, args, needle):
    head = git("rev-parse", "HEAD", cwd=repo)
    assert main(["rollout", "retry", *args, "--repo", str(repo)]) == 2
    assert needle in capsys.readouterr().err
    assert git("rev-parse", "HEAD", cwd=repo) == head and git("status", "--porcelain", cwd=repo) == ""


def test_a_flow_style_rollout_is_refused(repo, capsys):
    (repo / "deployments/flow.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Deployment\nmetadata:\n  name: flow\nspec:\n  model: demand-forecast\n"
        "  version: 1.0.0\n  rollout: {waves: [{name: all, percent: 100}]}\n")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "A flow-style rollout", cwd=repo)
    head = git("rev-parse", "HEAD", cwd=repo)
    assert main(["rollout", "retry", "flow", "--repo", str(repo)]) == 2
    assert "set `attempt: 1` under it by hand" in capsys.readouterr().err
    assert git("rev-parse", "HEAD", cwd=repo) == head and git("status", "--porcelain", cwd=repo) == ""
