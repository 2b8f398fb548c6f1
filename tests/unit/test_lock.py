"""What is tested is what is installed: requirements.lock pins every dependency pyproject names,
within pyproject's ranges, for every supported Python; and the environment running these tests
holds exactly the locked versions."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
SUPPORTED = ("3.11.2", "3.12", "3.13")  # the Pythons `make test` runs: Debian 12's, then pyenv's
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s;]+)\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?$")


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def locked_pins() -> list[tuple[str, Version, Marker | None]]:
    pins = []
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        found = _PIN.match(line)
        if found:
            marker = Marker(found["marker"]) if found["marker"] else None
            pins.append((canonicalize_name(found["name"]), Version(found["version"]), marker))
    return pins


def environment(python: str) -> dict[str, str]:
    return {"python_version": ".".join(python.split(".")[:2]), "python_full_version": python,
            "sys_platform": "linux", "platform_system": "Linux", "implementation_name": "cpython",
            "platform_machine": "x86_64", "os_name": "posix", "platform_python_implementation": "CPython",
            "extra": "dev"}


def pins_for(python: str) -> dict[str, Version]:
    env = environment(python)
    return {name: version for name, version, marker in locked_pins() if marker is None or marker.evaluate(env)}


def test_every_locked_line_is_hashed() -> None:
    entries = [block for block in re.split(r"\n(?=[^\s#])", (ROOT / "requirements.lock").read_text()) if "==" in block]
    assert len(entries) == len(locked_pins()) > 0
    assert [entry.split()[0] for entry in entries if "--hash=sha256:" not in entry] == []


@pytest.mark.parametrize("python", SUPPORTED)
def test_the_lock_satisfies_pyproject_for_each_supported_python(python: str) -> None:
    declared = [Requirement(text) for text in project()["dependencies"] + project()["optional-dependencies"]["dev"]]
    pins = pins_for(python)
    env = environment(python)
    for requirement in declared:
        if requirement.marker is not None and not requirement.marker.evaluate(env):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not locked for Python {python}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name} is locked at {pins[name]}, outside pyproject's {requirement.specifier}: run `make lock`"
        )


def test_requires_python_admits_exactly_the_tested_pythons() -> None:
    admitted = SpecifierSet(project()["requires-python"])
    assert all(admitted.contains(python) for python in SUPPORTED)
    assert not admitted.contains("3.11.1") and not admitted.contains("3.14.0")


def test_this_environment_holds_the_locked_versions() -> None:
    python = ".".join(str(part) for part in sys.version_info[:3])
    for name, version in pins_for(python).items():
        installed = Version(metadata.version(name))
        assert installed == version, f"{name} {installed} is installed, the lock says {version}: `make clean test`"
