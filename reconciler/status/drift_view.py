"""The fleet's drift, from the sites' status records (pure: records and profiles in, text or JSON
out): sites x features, each site ranked by its worst feature, and per model version the pooled
drift of every site's last window summed bin by bin. Both, because drift at one site can vanish in
a pooled figure (a local shift is a small share of the fleet's rows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler import reasons
from reconciler.monitoring.profile import Profile
from reconciler.monitoring.windows import DriftSummary, pool
from reconciler.status.record import StatusRecord


@dataclass(frozen=True)
class SiteDrift:
    site: str
    deployment: str
    model: str
    summary: DriftSummary


@dataclass(frozen=True)
class PooledDrift:
    model: str
    version: str
    profile: str
    sites: int
    rows: int
    scores: dict[str, float]  # feature -> score of the pooled bins
    drifted: list[str]  # features whose pooled score reaches the profile's threshold


def site_drifts(records: Mapping[str, StatusRecord]) -> list[SiteDrift]:
    """Every deployment's drift summary, worst first (DriftDetected, then by worst feature score)."""
    found = [SiteDrift(site, name, status.model, status.drift) for site, record in records.items()
             for name, status in record.deployments.items() if status.drift is not None]
    return sorted(found, key=lambda d: (d.summary.state != reasons.DriftDetected, -d.summary.worst(), d.site, d.deployment))


def pooled(drifts: list[SiteDrift], profiles: Mapping[str, Profile]) -> list[PooledDrift]:
    """Per model version and profile digest, the sites' bins added up; ``profiles`` by digest (a
    profile the caller could not read leaves its version out)."""
    groups: dict[tuple[str, str, str], list[DriftSummary]] = {}
    for drift in drifts:
        groups.setdefault((drift.model, drift.summary.version, drift.summary.profile), []).append(drift.summary)
    result = []
    for (model, version, digest), summaries in sorted(groups.items()):
        profile = profiles.get(digest)
        if profile is None:
            continue
        scores = pool(profile, summaries)
        result.append(PooledDrift(model, version, digest, len(summaries), sum(s.rows for s in summaries),
                                  {name: round(s.score, 4) for name, s in scores.items()},
                                  [name for name, s in scores.items() if s.breached]))
    return result


def render_text(drifts: list[SiteDrift], pools: list[PooledDrift]) -> str:
    if not drifts:
        return "no site reports drift: no deployed version names a reference profile, or no window has closed yet"
    features = list(dict.fromkeys(name for d in drifts for name in d.summary.features))
    header = ["SITE", "DEPLOYMENT", "VERSION", "STATE", "ROWS", *features]
    rows = [[d.site, d.deployment, d.summary.version, d.summary.state, str(d.summary.rows),
             *[_cell(d.summary, name) for name in features]] for d in drifts]
    lines = text_table([header, *rows])
    for p in pools:
        worst = sorted(p.scores.items(), key=lambda item: -item[1])[:5]
        lines.append(f"pooled {p.model} {p.version} over {p.sites} site(s), {p.rows} rows: "
                     + ", ".join(f"{name} {score:.3f}{'!' if name in p.drifted else ''}" for name, score in worst))
    lines.append("cells: score of the last window (JS distance, or L-infinity for categories); * drifted")
    return "\n".join(lines)


def to_json(drifts: list[SiteDrift], pools: list[PooledDrift]) -> dict[str, Any]:
    return {
        "sites": [{"site": d.site, "deployment": d.deployment, "model": d.model,
                   **d.summary.model_dump(mode="json")} for d in drifts],
        "pooled": [{"model": p.model, "version": p.version, "profile": p.profile, "sites": p.sites, "rows": p.rows,
                    "scores": p.scores, "drifted": p.drifted} for p in pools],
    }


def _cell(summary: DriftSummary, name: str) -> str:
    feature = summary.features.get(name)
    if feature is None:
        return "-"
    return f"{feature.score:.3f}{'*' if name in summary.drifted else ''}"


def text_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
