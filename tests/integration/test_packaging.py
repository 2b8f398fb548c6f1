"""What a user installs: a wheel under our own distribution name that carries what the commands
need, working outside the source tree; and the example pull-request workflow, which installs
reconciler only from a pinned source."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "example-fleet-repo" / ".github" / "workflows" / "pull-request.yml"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (built,) = out.glob("*.whl")
    return built


def test_the_distribution_name_is_ours_and_the_command_keeps_its_name() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "reconciler-fleet"  # "reconciler" on PyPI is an unrelated project
    assert project["scripts"] == {"reconciler": "reconciler.cli:main"}


def test_the_wheel_carries_the_example_fleet(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {path.relative_to(ROOT / "example-fleet-repo").as_posix()
               for path in (ROOT / "example-fleet-repo").rglob("*") if path.is_file()}
    assert shipped and {f"reconciler/example_fleet/{name}" for name in shipped} <= names
    assert wheel.name.startswith("reconciler_fleet-")


def test_the_wheel_carries_the_grpc_definition_the_runtime_loads(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    proto = "reconciler/runtime/proto/grpc_predict_v2"
    assert {f"{proto}.proto", f"{proto}.binpb", "reconciler/runtime/proto/SOURCE.md"} <= names


def test_an_installed_wheel_validates_its_example_fleet_outside_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import reconciler.devtools.demo as d; print(d.EXAMPLE_REPO)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    example = Path(where.stdout.strip())
    assert example.is_relative_to(target) and (example / "fleet.yaml").is_file()
    validated = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(example)],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.startswith("ok:")


def install_step() -> str:
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["validate-and-plan"]["steps"]
    (step,) = [step for step in steps if step.get("name") == "install reconciler"]
    return step["run"]


@pytest.mark.parametrize(("package", "installs"), [
    ("reconciler-fleet @ git+https://git.example.com/platform/reconciler@4f2a9c1", True),
    ("https://files.example.com/reconciler_fleet-0.1.0-py3-none-any.whl#sha256=" + "ab" * 32, True),
    ("reconciler", False),
    ("reconciler-fleet", False),
    ("reconciler-fleet==0.1.0", False),  # a pinned version of a name is still anyone's name
    ("https://files.example.com/reconciler_fleet-0.1.0-py3-none-any.whl", False),
    ("", False),
])
def test_the_pull_request_workflow_installs_only_a_pinned_source(tmp_path: Path, package: str, installs: bool) -> None:
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "pip").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/pip-args\n')
    (shim / "pip").chmod(0o755)
    env = {"PATH": f"{shim}:/usr/bin:/bin", "RECONCILER_PACKAGE": package}
    done = subprocess.run(["bash", "-e", "-c", install_step()], env=env, capture_output=True, text=True, timeout=30)
    assert (done.returncode == 0) is installs, done.stdout + done.stderr
    if installs:
        assert (tmp_path / "pip-args").read_text().splitlines() == ["install", package]
    else:
        assert "is not pinned" in done.stdout and not (tmp_path / "pip-args").exists()
