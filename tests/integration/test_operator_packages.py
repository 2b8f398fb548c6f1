"""The packages an operator installs (packaging/): each checked by the real tool made for it, and
each check shown to fail on a deliberately broken copy, so a passing check means something.
hadolint and kubernetes-validate come with the dev dependencies; systemd-analyze with Debian's
systemd package (`make packaging-tools`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
DOCKERFILE = PACKAGING / "container" / "Dockerfile"
UNIT = PACKAGING / "systemd" / "reconciler.service"
KUSTOMIZATION = PACKAGING / "kubernetes" / "kustomization.yaml"
STATE = "/var/lib/reconciler"
EXPOSURE_LIMIT = 2.5
TOOL_TIMEOUT = 300  # kubernetes-validate loads large schemas; the box is shared


def _tool(name: str) -> str:
    """The dev dependency's command beside this Python, else on PATH; a skip that says why when absent."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (make packaging-tools installs it)")
    return found


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=TOOL_TIMEOUT)


def _broken_copy(source: Path, tmp_path: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text, f"{old!r} is not in {source.name}: the broken copy would break nothing"
    broken = tmp_path / source.name
    broken.write_text(text.replace(old, new, 1))
    return broken


# --- the container image -------------------------------------------------------------------------

def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return _run(_tool("hadolint"), "--failure-threshold", "info", "--no-color", dockerfile)


def test_the_dockerfile_passes_hadolint() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("old", "new", "rule"), [
    ("USER 10001:10001\n", "USER root\n", "DL3002"),  # the last user is root
    ("/opt/reconciler/bin/pip install --no-deps /src", "/opt/reconciler/bin/pip install --no-deps /src && cd /src",
     "DL3003"),  # cd inside RUN instead of WORKDIR
    ("FROM python:3.11-slim-bookworm AS build", "FROM python AS build", "DL3006"),  # an untagged base image
])
def test_hadolint_fails_a_broken_dockerfile(tmp_path: Path, old: str, new: str, rule: str) -> None:
    result = _hadolint(_broken_copy(DOCKERFILE, tmp_path, old, new))
    assert result.returncode != 0
    assert rule in result.stdout


def test_the_image_runs_as_non_root_with_state_on_a_volume_and_checks_readiness() -> None:
    text = DOCKERFILE.read_text()
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001:10001$", final_stage, re.MULTILINE)
    assert f'VOLUME ["{STATE}"]' in final_stage
    assert "PYTHONDONTWRITEBYTECODE=1" in final_stage  # nothing written beside the code on a read-only root
    assert "/v2/health/ready" in final_stage.split("HEALTHCHECK", 1)[1]
    assert "--require-hashes" in text and "-r requirements.lock" in text


def build_context(dockerfile: Path, destination: Path) -> Path:
    """What the build stage's COPY lines put in its WORKDIR, copied from the repository (links kept
    as links, as docker copies them), and nothing else."""
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, target = line.split()[1:]
            for source in sources:
                copied = destination / target / source if target.endswith("/") else destination / target
                copied.parent.mkdir(parents=True, exist_ok=True)
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, copied, symlinks=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy2(ROOT / source, copied)
    return destination


def test_what_the_image_copies_builds_the_wheel_with_its_example_fleet(tmp_path: Path) -> None:
    context = build_context(DOCKERFILE, tmp_path / "src")
    result = _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp_path / "wheel", context)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "reconciler/example_fleet/fleet.yaml" in archive.namelist()


def test_a_copy_set_without_the_example_fleet_is_caught(tmp_path: Path) -> None:
    broken = _broken_copy(DOCKERFILE, tmp_path, "COPY example-fleet-repo ./example-fleet-repo\n", "")
    context = build_context(broken, tmp_path / "src")
    result = _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp_path / "wheel", context)
    built = list((tmp_path / "wheel").glob("*.whl"))
    assert result.returncode != 0 or "reconciler/example_fleet/fleet.yaml" not in zipfile.ZipFile(built[0]).namelist()


# --- the systemd unit ----------------------------------------------------------------------------

def _installed_unit(unit: Path, tmp_path: Path) -> Path:
    """The unit as installed with the venv this test runs from: verify checks that ExecStart's
    command exists and is executable, and /opt/reconciler is not on this box."""
    command = Path(sys.executable).parent / "reconciler"
    if not command.exists():
        pytest.skip(f"no reconciler command beside {sys.executable} (pip install -e . installs it)")
    installed = tmp_path / "installed" / unit.name
    installed.parent.mkdir()
    installed.write_text(unit.read_text().replace("/opt/reconciler/bin/reconciler", str(command)))
    return installed


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return _run(_tool("systemd-analyze"), "verify", "--man=no", unit)


def _exposure(unit: Path) -> float:
    result = _run(_tool("systemd-analyze"), "security", "--offline=true", "--no-pager", unit)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout[-2000:] + result.stderr
    return float(found[1])


def test_the_unit_verifies_without_a_single_warning(tmp_path: Path) -> None:
    # verify exits 0 on an unknown key and only says so on stderr: any stderr is a failure.
    result = _verify(_installed_unit(UNIT, tmp_path))
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


@pytest.mark.parametrize(("old", "new"), [
    ("ProtectSystem=strict", "ProtectSystm=strict"),  # a misspelled key: rc 0, a warning on stderr
    ("Restart=on-failure", "Restart=sometimes"),  # a value systemd does not know
])
def test_verify_fails_a_broken_unit(tmp_path: Path, old: str, new: str) -> None:
    result = _verify(_installed_unit(_broken_copy(UNIT, tmp_path, old, new), tmp_path))
    assert result.returncode != 0 or result.stderr


def test_the_unit_is_hardened_to_an_exposure_of_at_most_2_5(tmp_path: Path) -> None:
    assert _exposure(UNIT) <= EXPOSURE_LIMIT
    readme = (ROOT / "README.md").read_text()
    assert f"exposure level {_exposure(UNIT)}" in readme, "the README states the score systemd-analyze gives"


def test_the_exposure_check_fails_a_unit_without_its_hardening(tmp_path: Path) -> None:
    stripped = "\n".join(line for line in UNIT.read_text().splitlines()
                         if line.startswith(("[", "Description", "ExecStart", "Type", "WantedBy")))
    unhardened = tmp_path / UNIT.name
    unhardened.write_text(stripped + "\n")
    assert _exposure(unhardened) > EXPOSURE_LIMIT


# --- the Kubernetes manifests --------------------------------------------------------------------

def render_kustomization(kustomization: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize` makes of our kustomization, for the only transformers it uses
    (namespace, labels without selectors): no kubectl needed. Anything else is refused here, so the
    rendering cannot silently drift from kustomize's."""
    spec = yaml.safe_load(kustomization.read_text())
    unsupported = set(spec) - {"apiVersion", "kind", "namespace", "labels", "resources"}
    assert not unsupported, f"render_kustomization does not implement {sorted(unsupported)}"
    labels: dict[str, str] = {}
    for entry in spec.get("labels", []):
        assert entry.get("includeSelectors") is False
        labels.update(entry["pairs"])
    documents = []
    for resource in spec["resources"]:
        for document in yaml.safe_load_all((kustomization.parent / resource).read_text()):
            metadata = document.setdefault("metadata", {})
            metadata["labels"] = {**metadata.get("labels", {}), **labels}
            if document["kind"] != "Namespace":
                metadata["namespace"] = spec["namespace"]
            documents.append(document)
    return documents


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl here (no Debian or PyPI package has it): "
                                                            "the rendering is checked against kustomize only where it is")
def test_the_rendering_is_what_kustomize_makes() -> None:
    done = _run("kubectl", "kustomize", KUSTOMIZATION.parent)
    assert done.returncode == 0, done.stderr
    theirs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(done.stdout)}
    assert {(d["kind"], d["metadata"]["name"]): d for d in render_kustomization(KUSTOMIZATION)} == theirs


def _kubernetes_validate(documents: list[dict[str, Any]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(documents))
    return _run(_tool("kubernetes-validate"), "--strict", "--quiet", rendered)


def _by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in documents if d["kind"] == kind]
    return found


def test_the_manifests_validate_strictly(tmp_path: Path) -> None:
    documents = render_kustomization(KUSTOMIZATION)
    result = _kubernetes_validate(documents, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {d["kind"] for d in documents} >= {"Deployment", "Service", "PersistentVolumeClaim", "ConfigMap"}


def test_kubernetes_validate_fails_a_misspelled_field(tmp_path: Path) -> None:
    documents = render_kustomization(KUSTOMIZATION)
    container = _by_kind(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = container["securityContext"].pop("readOnlyRootFilesystem")
    result = _kubernetes_validate(documents, tmp_path)
    assert result.returncode != 0
    assert "readOnlyRootFileSystem" in result.stdout + result.stderr


def test_one_writer_per_site_locked_down_as_flux_runs_its_controllers() -> None:
    documents = render_kustomization(KUSTOMIZATION)
    deployment = _by_kind(documents, "Deployment")["spec"]
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    assert (deployment["replicas"], deployment["strategy"]["type"]) == (1, "Recreate")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = _by_kind(documents, "PersistentVolumeClaim")["metadata"]["name"]
    assert volumes[mounts[STATE]]["persistentVolumeClaim"]["claimName"] == claim
    assert "emptyDir" in volumes[mounts["/tmp"]]  # validation children's working directories
    site = yaml.safe_load(_by_kind(documents, "ConfigMap")["data"]["site.yaml"])
    assert site["state"] == STATE
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    service = _by_kind(documents, "Service")["spec"]
    assert service["selector"] == deployment["selector"]["matchLabels"]
