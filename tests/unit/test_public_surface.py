"""The declared public surface: every package's ``__all__`` is what README's "Public surface" table
says, every name in it resolves, and no import across packages in ``reconciler/`` or ``bench/``
reaches past it. A module listed in ``__all__`` is written ``name.py`` in the table."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import types
from pathlib import Path

import pytest

import reconciler

ROOT = Path(reconciler.__file__).resolve().parents[1]
PACKAGES = ["reconciler"] + sorted(
    f"reconciler.{init.parent.name}" for init in (ROOT / "reconciler").glob("*/__init__.py"))
SURFACES = {name: set(getattr(importlib.import_module(name), "__all__", ())) for name in PACKAGES}


def readme_table() -> dict[str, list[str]]:
    """The rows of the table under README's "### Public surface": package -> its cells."""
    section = (ROOT / "README.md").read_text().split("### Public surface\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `([\w.]+)` \| (.+) \|$", section, flags=re.MULTILINE)
    return {package: re.findall(r"`([\w.]+)`", cells) for package, cells in rows}


def is_module(package: types.ModuleType, name: str) -> bool:
    """Whether ``name`` in the package's ``__all__`` is a submodule (fails if it resolves to nothing)."""
    value = getattr(package, name, None)
    if value is None:
        spec = importlib.util.find_spec(f"{package.__name__}.{name}")
        assert spec is not None, f"{package.__name__}.__all__ names {name!r}, which is neither defined nor a module"
        return True
    return isinstance(value, types.ModuleType)


def declared(package_name: str) -> list[str]:
    package = importlib.import_module(package_name)
    assert "__all__" in vars(package), f"{package_name} declares no __all__"
    return [f"{name}.py" if is_module(package, name) else name for name in package.__all__]


def test_readme_has_one_row_per_package():
    assert sorted(readme_table()) == PACKAGES


@pytest.mark.parametrize("package_name", PACKAGES)
def test_all_resolves_and_matches_readme(package_name):
    names = declared(package_name)
    assert len(names) == len(set(names)), f"{package_name}.__all__ repeats a name"
    assert sorted(names) == sorted(readme_table().get(package_name, [])), (
        f"README's Public surface row for {package_name} differs from its __all__")


def undeclared_imports(source: str, own: str | None) -> list[str]:
    """``package.name`` for each name this source takes from a reconciler package other than ``own``
    that is not in that package's ``__all__``: ``from reconciler.p import name``, ``reconciler.p.name``
    as a module path, and ``p.name`` after ``from reconciler import p``."""
    tree = ast.parse(source)
    found: list[tuple[str, str]] = []
    bound_packages: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "reconciler":
            for alias in node.names:
                if f"reconciler.{alias.name}" in PACKAGES:
                    bound_packages[alias.asname or alias.name] = f"reconciler.{alias.name}"
                else:
                    found.append(("reconciler", alias.name))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend(_module_path(node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found.extend(_module_path(alias.name, []))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in bound_packages):
            found.append((bound_packages[node.value.id], node.attr))
    return sorted({f"{package}.{name}" for package, name in found
                   if package != own and name not in SURFACES[package] and not name.startswith("__")})


def _module_path(module: str, names: list[str]) -> list[tuple[str, str]]:
    parts = module.split(".")
    package = ".".join(parts[:2])
    if parts[0] != "reconciler" or package not in PACKAGES:
        return []
    if len(parts) > 2:
        return [(package, parts[2])]
    return [(package, name) for name in names]


def own_package(path: Path) -> str | None:
    parts = path.relative_to(ROOT).parts
    return f"reconciler.{parts[1]}" if parts[0] == "reconciler" and len(parts) > 2 else None


def test_imports_across_packages_stay_on_the_declared_surface():
    files = sorted((ROOT / "reconciler").rglob("*.py")) + sorted((ROOT / "bench").rglob("*.py"))
    reaching = [f"{path.relative_to(ROOT)}: {name}" for path in files
                for name in undeclared_imports(path.read_text(), own_package(path))]
    assert reaching == [], "imports past a package's __all__ (declare the name or use a public one)"


PROBE = """
from reconciler.agent.selfheal import heal
from reconciler import trust, Stalled
import reconciler.cli.scaffold
from reconciler.flags import jsonlogic, FlagSet
from reconciler.gitdoor.source import GitSource
from reconciler.errors import Transient

def later():
    from reconciler import Nope
    return trust.bundles.parse_bundle, trust.TrustRoots
"""


@pytest.mark.parametrize(("own", "expected"), [
    (None, ["reconciler.Nope", "reconciler.agent.selfheal", "reconciler.cli.scaffold",
            "reconciler.flags.jsonlogic", "reconciler.trust.bundles"]),
    ("reconciler.agent", ["reconciler.Nope", "reconciler.cli.scaffold", "reconciler.flags.jsonlogic",
                          "reconciler.trust.bundles"]),
])
def test_the_scan_sees_every_form_of_import(own, expected):
    """So that an empty result above means something: each form is caught, declared names and the
    importer's own package pass."""
    assert undeclared_imports(PROBE, own) == expected
