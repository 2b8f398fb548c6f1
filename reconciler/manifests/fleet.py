"""The loaded fleet: every document of one commit, indexed by name, with where each came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from reconciler.flags import FlagSet
from reconciler.manifests.deployments import Deployment
from reconciler.manifests.models import Fleet, FleetSpec, Model, Site


@dataclass(frozen=True)
class Origin:
    path: str  # repo-relative, forward slashes
    line: int  # 1-based line of the document's first line


@dataclass(frozen=True)
class Finding:
    """One validation result, printed as ``path:line:col: severity: message``."""

    path: str
    line: int
    col: int
    message: str
    severity: Literal["error", "warning"] = "error"
    field: str | None = None  # dotted path inside the document, e.g. spec.versions[1].digest

    def render(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.severity}: {self.message}"


@dataclass(frozen=True)
class FleetRepo:
    fleet: Fleet | None
    sites: dict[str, Site]
    models: dict[str, Model]
    deployments: dict[str, Deployment]
    flags: FlagSet
    origins: dict[tuple[str, str], Origin] = field(default_factory=dict)  # (kind, name) -> origin

    @cached_property
    def label_groups(self) -> list[tuple[dict[str, str], list[str]]]:
        """The sites grouped by identical labels, with their names, in the sites' order: fleets have
        thousands of sites but few kinds of site, so selectors are matched once per group. Built on
        first use, once per loaded fleet (a FleetRepo is never changed)."""
        groups: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], list[str]]] = {}
        for name, site in self.sites.items():
            labels = site.metadata.labels
            groups.setdefault(tuple(sorted(labels.items())), (labels, []))[1].append(name)
        return list(groups.values())

    @property
    def spec(self) -> FleetSpec:
        """The Fleet document's spec, or the defaults of a fleet that has none."""
        return self.fleet.spec if self.fleet else FleetSpec()
