"""PURE: the fleet impact of a change, for a pull request. Compares two loaded commits of the
fleet repo: which deployments change, which sites move from which version to which and in which
wave, what the rollout and canary rules are, and what the head would fail on."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.manifests.fleet import Finding, FleetRepo
from reconciler.manifests.models import Canary, Rollout
from reconciler.manifests.selectors import matches
from reconciler.manifests.types import format_duration
from reconciler.plan import Unplannable, rollout_of, target_for

NONE = "-"  # not served at the site


@dataclass(frozen=True)
class Move:
    """Sites of one wave that go from one version to another (or fail to)."""

    wave: str | None
    from_version: str
    to_version: str
    sites: tuple[str, ...]
    problem: str | None = None  # the reason the head cannot be applied at these sites


@dataclass(frozen=True)
class DeploymentImpact:
    name: str
    change: str  # added, removed, changed
    model: str
    moves: tuple[Move, ...]
    rollout: Rollout | None
    canary: Canary | None

    @property
    def sites_moving(self) -> int:
        return sum(len(m.sites) for m in self.moves if m.problem is None)


@dataclass(frozen=True)
class Impact:
    base: str
    head: str
    deployments: tuple[DeploymentImpact, ...]
    findings: tuple[Finding, ...] = field(default=())  # what validate says of the head

    @property
    def blocked(self) -> bool:
        return any(f.severity == "error" for f in self.findings) or any(
            m.problem for d in self.deployments for m in d.moves)

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "head": self.head,
            "blocked": self.blocked,
            "findings": [{"path": f.path, "line": f.line, "severity": f.severity, "message": f.message}
                         for f in self.findings],
            "deployments": [
                {"name": d.name, "change": d.change, "model": d.model, "sitesMoving": d.sites_moving,
                 "rollout": d.rollout.model_dump(mode="json") if d.rollout else None,
                 "canary": d.canary.model_dump(mode="json", exclude_none=True) if d.canary else None,
                 "moves": [{"wave": m.wave, "from": m.from_version, "to": m.to_version, "sites": list(m.sites),
                            "problem": m.problem} for m in d.moves]}
                for d in self.deployments
            ],
        }


def fleet_impact(base: FleetRepo, head: FleetRepo, base_rev: str, head_rev: str, now: datetime,
                 findings: list[Finding] | None = None) -> Impact:
    impacts = []
    for name in sorted(set(base.deployments) | set(head.deployments)):
        before, after = base.deployments.get(name), head.deployments.get(name)
        if before is not None and after is not None and not _differs(base, head, name):
            continue
        change = "added" if before is None else "removed" if after is None else "changed"
        moves = _moves(base, head, name, now)
        current = after or before
        rollout = rollout_of(head, after) if after is not None else None
        impacts.append(DeploymentImpact(name, change, current.spec.model, moves, rollout,
                                        after.spec.canary if after else None))
    return Impact(base_rev, head_rev, tuple(impacts), tuple(findings or ()))


def _differs(base: FleetRepo, head: FleetRepo, name: str) -> bool:
    """The deployment, the model it names, or the flags it reads changed."""
    before, after = base.deployments[name], head.deployments[name]
    if before != after:
        return True
    model = after.spec.model
    return base.models.get(model) != head.models.get(model) or base.flags != head.flags or \
        base.sites != head.sites


def _moves(base: FleetRepo, head: FleetRepo, name: str, now: datetime) -> tuple[Move, ...]:
    groups: dict[tuple[str | None, str, str, str | None], list[str]] = defaultdict(list)
    for site in sorted(set(base.sites) | set(head.sites)):
        before, _, _ = _position(base, name, site, now)
        after, wave, problem = _position(head, name, site, now)
        if before != after or problem is not None:
            groups[(wave, before, after, problem)].append(site)
    order = _wave_order(head, name)
    return tuple(Move(wave, frm, to, tuple(sites), problem)
                 for (wave, frm, to, problem), sites in sorted(groups.items(), key=lambda g: (order(g[0][0]), g[0][1:3])))


def _position(repo: FleetRepo, name: str, site_name: str, now: datetime) -> tuple[str, str | None, str | None]:
    """(version, wave, problem) of a deployment at a site in one commit."""
    deployment, site = repo.deployments.get(name), repo.sites.get(site_name)
    if deployment is None or site is None or not matches(deployment.spec.targets, site.metadata.labels):
        return NONE, None, None
    try:
        target = target_for(repo, deployment, site, now)
    except Unplannable as why:
        return "?", None, f"{why.reason}: {why.message}"
    return (target.version, target.wave, None) if target else (NONE, None, None)


def _wave_order(repo: FleetRepo, name: str):
    deployment = repo.deployments.get(name)
    rollout = rollout_of(repo, deployment) if deployment else None
    names = [w.name for w in rollout.waves] if rollout else []
    return lambda wave: names.index(wave) if wave in names else len(names)


# --- rendering ----------------------------------------------------------------------------------

def render_markdown(impact: Impact, max_sites: int = 8) -> str:
    lines = [f"### Fleet impact of `{impact.head[:12]}` against `{impact.base[:12]}`", ""]
    if not impact.deployments:
        lines.append("No deployment changes at any site.")
    for d in impact.deployments:
        lines += [f"#### `{d.name}` ({d.change}, model `{d.model}`): {d.sites_moving} site(s) move", ""]
        if d.moves:
            lines += ["| wave | from | to | sites |", "|---|---|---|---|"]
            for m in d.moves:
                to = f"**cannot apply**: {m.problem}" if m.problem else m.to_version
                lines.append(f"| {m.wave or '—'} | {m.from_version} | {to} | {_site_list(m.sites, max_sites)} |")
            lines.append("")
        lines += [f"- {rule}" for rule in _rules(d)] + [""]
    errors = [f for f in impact.findings if f.severity == "error"]
    if impact.findings:
        lines += [f"#### Validation: {len(errors)} error(s)", ""]
        lines += [f"- `{f.path}:{f.line}`: {f.severity}: {f.message}" for f in impact.findings] + [""]
    lines.append("**Blocked:** fix the problems above before merging." if impact.blocked else
                 "Validation passes; every site that moves can apply the change.")
    return "\n".join(lines)


def render_text(impact: Impact) -> str:
    lines = [f"fleet impact of {impact.head[:12]} against {impact.base[:12]}: {len(impact.deployments)} deployment(s) change"]
    for d in impact.deployments:
        lines.append(f"  {d.name} ({d.change}, model {d.model}): {d.sites_moving} site(s) move")
        for m in d.moves:
            to = f"CANNOT APPLY ({m.problem})" if m.problem else m.to_version
            lines.append(f"    wave {m.wave or '-':<10} {m.from_version:>8} -> {to}  {_site_list(m.sites, 6)}")
        lines += [f"    {rule}" for rule in _rules(d)]
    lines += [f"  {f.render()}" for f in impact.findings]
    lines.append("blocked" if impact.blocked else "ok")
    return "\n".join(lines)


def _rules(d: DeploymentImpact) -> list[str]:
    rules = []
    if d.rollout:
        waves = ", ".join(f"{w.name} ({w.percent}%)" if w.percent is not None else f"{w.name} (selector)"
                          for w in d.rollout.waves)
        gate, abort = d.rollout.gate, d.rollout.abort
        rules.append(f"rollout: waves {waves}; gate {gate.minHealthyRatio:.0%} healthy, bake "
                     f"{format_duration(gate.bakeTime)}, deadline {format_duration(gate.progressDeadline)}, "
                     f"unreported count as {'failed' if gate.unreported == 'fail' else 'ignored'}; abort at "
                     f"{abort.failureThreshold:.0%} failures after {abort.minExecuted} site(s)")
    else:
        rules.append("rollout: every targeted site at once")
    steps = d.canary.steps if d.canary else []
    rules.append("canary: " + (" → ".join(_step(s) for s in steps) if steps else "none (validate, then switch)"))
    return rules


def _step(step) -> str:
    if step.setWeight is not None:
        return f"{step.setWeight}%"
    if step.pause is not None:
        return f"pause {format_duration(step.pause.duration)}"
    a = step.analysis
    checks = [f"≥{a.minRequests} req"] + [text for present, text in (
        (a.maxErrorRate is not None, f"errors ≤{a.maxErrorRate:.1%}" if a.maxErrorRate is not None else ""),
        (a.maxLatencyP99 is not None, f"p99 ≤{format_duration(a.maxLatencyP99)}" if a.maxLatencyP99 else ""),
        (a.minAgreement is not None, f"agreement ≥{a.minAgreement:.0%}" if a.minAgreement is not None else ""),
    ) if present]
    return f"analysis {format_duration(a.window)} ({', '.join(checks)})"


def _site_list(sites: tuple[str, ...], limit: int) -> str:
    shown = ", ".join(sites[:limit])
    return f"{shown}, … (+{len(sites) - limit})" if len(sites) > limit else shown
