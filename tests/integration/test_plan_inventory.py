"""`reconciler plan --site` warns where the site's own inventory, from its newest status record,
contradicts the platform of the artifact the plan picks: a real agent reports from this x86_64 box
as factory-pune-01, whose labels say arm64."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.devtools.testing import EXAMPLE, copy_example, git

PUNE = "factory-pune-01"  # labels: arch arm64, accelerator jetson-orin


def reconciler(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the contradiction needs a box that is not arm64")
def test_plan_warns_when_the_sites_inventory_contradicts_the_artifact_its_labels_pick(tmp_path: Path) -> None:
    repo = copy_example(tmp_path / "fleet", progressive=False)
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "first", cwd=repo)
    reported = reconciler("run", "--once", "--repo", str(repo), "--site", PUNE, "--state", str(tmp_path / "state"),
                          "--trust-key", str(EXAMPLE / "keys" / "demo.pub"))
    assert '"arch": "x86_64"' in reported.stdout, reported.stderr
    deployment = repo / "deployments" / "defect-detector.yaml"
    deployment.write_text(deployment.read_text().replace("version: 1.0.0", "version: 2.0.0", 1))  # arm64 and amd64 artifacts

    planned = reconciler("plan", "--site", PUNE, "--repo", str(repo))
    assert planned.returncode == 0, planned.stderr
    assert planned.stderr == (f"warning: {PUNE}: defect-detector gets the artifact of defect-detector 2.0.0 for "
                              f"arch arm64, but the site says it runs x86_64: check its arch label\n")
    assert "2.0.0" in planned.stdout  # the plan itself stands: the labels decide

    never_reported = reconciler("plan", "--site", "factory-chennai-01", "--repo", str(repo))
    assert never_reported.returncode == 0 and "warning" not in never_reported.stderr
