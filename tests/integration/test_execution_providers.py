"""Execution providers per site, with the real onnxruntime (which has only the CPU here): serving
and validation skip a provider this box lacks and say so, refuse when none of the site's is there,
and a real agent's status record says which provider serves each deployment, beside its inventory,
which `reconciler status --inventory` shows."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from runtime_models import INTERFACE, write_models

from reconciler.devtools.testing import EXAMPLE, copy_example, git
from reconciler.errors import Stalled
from reconciler.runtime.registry import ModelRegistry
from reconciler.runtime.validation import run_validation

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
SITE = "store-boston-01"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models(tmp_path_factory.mktemp("models"))["1.0.0"]


def test_serving_skips_a_provider_this_box_lacks_says_so_and_serves_on_the_next(
        model_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="reconciler.runtime"):
        registry = ModelRegistry(providers=[CUDA, CPU])
    assert f"execution providers {CUDA} are not available in this onnxruntime" in caplog.text
    assert registry.execution_provider("iris") is None  # nothing served yet
    registry.activate("iris", "iris", "1.0.0", model_file, INTERFACE)
    assert registry.execution_provider("iris") == CPU


def test_serving_refuses_when_none_of_the_sites_providers_is_there() -> None:
    with pytest.raises(Stalled) as refused:
        ModelRegistry(providers=[CUDA])
    assert refused.value.reason == "NoExecutionProvider" and "add CPUExecutionProvider" in refused.value.message


def test_validation_runs_on_the_providers_serving_uses(model_file: Path) -> None:
    assert run_validation(model_file, INTERFACE, [], providers=[CUDA, CPU]).provider == CPU
    with pytest.raises(Stalled) as refused:
        run_validation(model_file, INTERFACE, [], providers=[CUDA])
    assert refused.value.reason == "NoExecutionProvider"
    assert f"none of the execution providers this site asks for ({CUDA}) is available" in refused.value.message


def reconciler(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, timeout=180)


def test_a_real_agent_reports_its_inventory_and_the_provider_of_each_deployment(tmp_path: Path) -> None:
    repo = copy_example(tmp_path / "fleet", progressive=False)
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "first", cwd=repo)
    scripts = tmp_path / "inventory.d"
    scripts.mkdir()
    (scripts / "cabinet").write_text("#!/bin/sh\necho cabinet=7\necho oops\n")
    (scripts / "cabinet").chmod(0o755)
    site_yaml = tmp_path / "site.yaml"
    site_yaml.write_text(yaml.safe_dump({
        "site": SITE, "repo": str(repo), "state": str(tmp_path / "state"), "listen": "127.0.0.1:0",
        "trustKeys": [str(EXAMPLE / "keys" / "demo.pub")], "executionProviders": [CUDA, CPU],
        "inventoryDir": str(scripts)}))
    done = reconciler("run", "--once", "--config", str(site_yaml))
    assert done.returncode == 0, done.stderr
    assert f"execution providers {CUDA} are not available" in done.stderr
    record = json.loads(done.stdout)
    served = {name: d["executionProvider"] for name, d in record["deployments"].items() if d["activeVersion"]}
    assert served and set(served.values()) == {CPU}
    assert record["inventory"]["local"] == {"cabinet": "7"}
    assert record["inventory"]["localErrors"] == ["cabinet line 2: not key=value"]
    assert CPU in record["inventory"]["executionProviders"]

    shown = reconciler("status", "--repo", str(repo), "--inventory", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    mine = json.loads(shown.stdout)[SITE]
    assert mine["inventory"] == record["inventory"] and mine["executionProviders"] == {
        name: d["executionProvider"] for name, d in record["deployments"].items()}
    text = reconciler("status", "--repo", str(repo), "--inventory").stdout
    block = text.split(f"{SITE} (agent ", 1)[1].split("\n\n", 1)[0]
    assert "cabinet=7" in block and "refused: cabinet line 2: not key=value" in block
    assert f"onnxruntime {record['inventory']['onnxruntime']}: " in block
    assert ", ".join(f"{name} on {CPU}" for name in sorted(served)) in block
