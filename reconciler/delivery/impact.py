"""PURE: the fleet impact of a change, for a pull request. Compares two loaded commits of the
fleet repo: which deployments change, which sites move from which version to which and in which
wave, what each of them will do next given the status records read (deploy, wait, halt, roll
back), which sites fall in no wave or never reported, what the rollout and canary rules are, and
what the head would fail on. It says what was checked and what was not, never more."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.delivery.fleet_checks import sites_in_no_wave
from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.plan import Target, Unplannable, rollout_of, target_for, wave_gate
from reconciler.delivery.rollout import in_maintenance_window
from reconciler.delivery.same_version import same_version_change
from reconciler.manifests.deployments import Canary
from reconciler.manifests.fleet import Finding, FleetRepo
from reconciler.manifests.models import Rollout
from reconciler.manifests.selectors import matches
from reconciler.manifests.types import format_duration
from reconciler.status.record import StatusRecord

NONE = "-"  # not served at the site


@dataclass(frozen=True)
class Move:
    """Sites of one wave that go from one version to another (or fail to)."""

    wave: str | None
    from_version: str
    to_version: str
    sites: tuple[str, ...]
    problem: str | None = None  # the reason the head cannot be applied at these sites
    next: str | None = None  # what these sites do next, e.g. "deploy (FirstWave)", "wait (Baking)"


@dataclass(frozen=True)
class DeploymentImpact:
    name: str
    change: str  # added, removed, changed
    model: str
    moves: tuple[Move, ...]
    rollout: Rollout | None
    canary: Canary | None
    no_wave: tuple[str, ...] = ()  # targeted sites none of the waves holds: they never move

    @property
    def sites_moving(self) -> int:
        return sum(len(m.sites) for m in self.moves if m.problem is None)


@dataclass(frozen=True)
class Impact:
    base: str
    head: str
    deployments: tuple[DeploymentImpact, ...]
    findings: tuple[Finding, ...] = field(default=())  # what validate says of the head
    checked: tuple[str, ...] | None = None  # versions whose artifacts were checked; None: no artifact check ran
    signatures: str = ""  # against what the signatures were verified, or why they were not
    signatures_verified: bool = False
    unreported: tuple[str, ...] | None = None  # moving sites with no status record; None: records not read

    @property
    def blocked(self) -> bool:
        return any(f.severity == "error" for f in self.findings) or any(
            m.problem for d in self.deployments for m in d.moves) or any(d.no_wave for d in self.deployments)

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "head": self.head,
            "blocked": self.blocked,
            "findings": [{"path": f.path, "line": f.line, "col": f.col, "severity": f.severity,
                          "message": f.message, "field": f.field} for f in self.findings],
            "artifactsChecked": list(self.checked) if self.checked is not None else None,
            "signatures": self.signatures,
            "unreported": list(self.unreported) if self.unreported is not None else None,
            "deployments": [
                {"name": d.name, "change": d.change, "model": d.model, "sitesMoving": d.sites_moving,
                 "rollout": d.rollout.model_dump(mode="json") if d.rollout else None,
                 "canary": d.canary.model_dump(mode="json", exclude_none=True) if d.canary else None,
                 "noWave": list(d.no_wave),
                 "moves": [{"wave": m.wave, "from": m.from_version, "to": m.to_version, "sites": list(m.sites),
                            "problem": m.problem, "next": m.next} for m in d.moves]}
                for d in self.deployments
            ],
        }


def fleet_impact(base: FleetRepo, head: FleetRepo, base_rev: str, head_rev: str, now: datetime,
                 findings: list[Finding] | None = None,
                 status: Mapping[str, StatusRecord] | FleetReports | None = None,
                 checked: tuple[str, ...] | None = None, signatures: str = "", signatures_verified: bool = False,
                 ) -> Impact:
    """``status``: every site's newest status record, as read, or the reports read from the
    roll-ups of the changed deployments' summaries (one entry per deployment read); None: none
    were read, and the gates are judged as if no site had reported."""
    impacts = []
    reports = status if isinstance(status, FleetReports) else FleetReports.of_records(status or {})
    for name in changed_deployments(base, head):
        before, after = base.deployments.get(name), head.deployments.get(name)
        change = "added" if before is None else "removed" if after is None else "changed"
        moves = _moves(base, head, name, now, reports, _moved_by(status))
        current = after or before
        rollout = rollout_of(head, after) if after is not None else None
        no_wave = tuple(sites_in_no_wave(head, after, now)) if after is not None else ()
        impacts.append(DeploymentImpact(name, change, current.spec.model, moves, rollout,
                                        after.spec.canary if after else None, no_wave))
    unreported = None if status is None else tuple(sorted(
        {s for d in impacts for m in d.moves if m.to_version != NONE for s in m.sites if _not_reported(status, d.name, s)}))
    return Impact(base_rev, head_rev, tuple(impacts), tuple(findings or ()), checked, signatures,
                  signatures_verified, unreported)


def changed_deployments(base: FleetRepo, head: FleetRepo) -> list[str]:
    """The deployments the change adds, removes or changes: those the impact is about."""
    return [name for name in sorted(set(base.deployments) | set(head.deployments))
            if name not in base.deployments or name not in head.deployments or _differs(base, head, name)]


def _not_reported(status: Mapping[str, StatusRecord] | FleetReports, name: str, site: str) -> bool:
    """A site with no record at all; from summaries, one with no report on a deployment read
    (a deployment with no rollout has no summary, so nothing is known of its sites there)."""
    if isinstance(status, FleetReports):
        return name in status.by_deployment and site not in status.of(name)
    return site not in status


Moved = Callable[[str, str, Target], bool]  # (deployment, site, target): the site serves the target already


def _moved_by(status: Mapping[str, StatusRecord] | FleetReports | None) -> Moved:
    """Whether a site reports it serves the rollout's version (an abort rolls it back, else halts
    it): its record says the version it serves; a summary's report does not, and a site counts
    as moved when it reports the rollout a success."""
    if isinstance(status, FleetReports):
        def reported_success(name: str, site: str, target: Target) -> bool:
            report = status.of(name).get(site)
            return report is not None and report.rollout_id == target.rollout_id and \
                report.version == target.version and report.state == "success"
        return reported_success
    records = status or {}

    def serves(name: str, site: str, target: Target) -> bool:
        record = records.get(site)
        reported = record.deployments.get(name) if record is not None else None
        return reported is not None and reported.rollout == target.rollout_id and reported.activeVersion == target.version
    return serves


def _differs(base: FleetRepo, head: FleetRepo, name: str) -> bool:
    """The deployment, the model it names, or the flags it reads changed."""
    before, after = base.deployments[name], head.deployments[name]
    if before != after:
        return True
    model = after.spec.model
    return base.models.get(model) != head.models.get(model) or base.flags != head.flags or \
        base.sites != head.sites


def _moves(base: FleetRepo, head: FleetRepo, name: str, now: datetime, reports: FleetReports,
           moved: Moved) -> tuple[Move, ...]:
    groups: dict[tuple[str | None, str, str, str | None, str | None], list[str]] = defaultdict(list)
    for site in sorted(set(base.sites) | set(head.sites)):
        before, _, _, was = _position(base, name, site, now)
        after, wave, problem, target = _position(head, name, site, now)
        same_version = same_version_change(was, target)  # other bytes or checks under the same name
        if before != after or problem is not None or same_version is not None:
            step = _next_step(head, name, site, target, reports, moved, now, same_version) if target is not None else \
                "remove" if after == NONE else None
            groups[(wave, before, after, problem, step)].append(site)
    order = _wave_order(head, name)
    return tuple(Move(wave, frm, to, tuple(sites), problem, step)
                 for (wave, frm, to, problem, step), sites in sorted(groups.items(),
                                                                     key=lambda g: (order(g[0][0]), g[0][1:3])))


def _position(repo: FleetRepo, name: str, site_name: str, now: datetime
              ) -> tuple[str, str | None, str | None, Target | None]:
    """(version, wave, problem, target) of a deployment at a site in one commit."""
    deployment, site = repo.deployments.get(name), repo.sites.get(site_name)
    if deployment is None or site is None or not matches(deployment.spec.targets, site.metadata.labels):
        return NONE, None, None, None
    try:
        target = target_for(repo, deployment, site, now)
    except Unplannable as why:
        return "?", None, f"{why.reason}: {why.message}", None
    return (target.version, target.wave, None, target) if target else (NONE, None, None, None)


def _next_step(head: FleetRepo, name: str, site_name: str, target: Target, reports: FleetReports, moved: Moved,
               now: datetime, same_version: str | None = None) -> str:
    """What the site does next, judged as it would judge: its wave's gate over the reports read
    (``same_version``: why a site deploys the version it serves again, same_version.py)."""
    gate, _ = wave_gate(head, head.deployments[name], target, site_name, reports, now)
    if gate is not None and gate.kind == "abort":
        return f"{'rollback' if moved(name, site_name, target) else 'halt'} ({gate.reason})"
    if gate is not None and gate.kind == "wait":
        return f"wait ({gate.reason})"
    if not in_maintenance_window(head.sites[site_name].spec.maintenanceWindows, now):
        return "prefetch (OutsideMaintenanceWindow)"
    why = same_version or (gate.reason if gate is not None else None)
    return f"deploy ({why})" if why else "deploy"


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
            lines += ["| wave | from | to | sites | next |", "|---|---|---|---|---|"]
            for m in d.moves:
                to = f"**cannot apply**: {m.problem}" if m.problem else m.to_version
                lines.append(f"| {m.wave or '—'} | {m.from_version} | {to} | {_site_list(m.sites, max_sites)} "
                             f"| {m.next or '—'} |")
            lines.append("")
        if d.no_wave:
            lines.append(f"- **in no wave** (never move): {_site_list(d.no_wave, max_sites)}")
        lines += [f"- {rule}" for rule in _rules(d)] + [""]
    lines += ["#### Artifacts", "", _artifacts(impact), ""]
    lines += ["#### Sites that never reported", "", _unreported(impact, max_sites), ""]
    errors = [f for f in impact.findings if f.severity == "error"]
    if impact.findings:
        lines += [f"#### Validation: {len(errors)} error(s)", ""]
        lines += [f"- `{f.path}:{f.line}:{f.col}`: {f.severity}: {f.message}" for f in impact.findings] + [""]
    lines.append("**Blocked:** fix the problems above before merging." if impact.blocked else _verdict(impact))
    return "\n".join(lines)


def render_text(impact: Impact) -> str:
    lines = [f"fleet impact of {impact.head[:12]} against {impact.base[:12]}: {len(impact.deployments)} deployment(s) change"]
    for d in impact.deployments:
        lines.append(f"  {d.name} ({d.change}, model {d.model}): {d.sites_moving} site(s) move")
        for m in d.moves:
            to = f"CANNOT APPLY ({m.problem})" if m.problem else m.to_version
            then = f"  next: {m.next}" if m.next else ""
            lines.append(f"    wave {m.wave or '-':<10} {m.from_version:>8} -> {to}  {_site_list(m.sites, 6)}{then}")
        if d.no_wave:
            lines.append(f"    in no wave (never move): {_site_list(d.no_wave, 6)}")
        lines += [f"    {rule}" for rule in _rules(d)]
    lines.append(f"  artifacts: {_artifacts(impact)}")
    lines.append(f"  never reported: {_unreported(impact, 6)}")
    lines += [f"  {f.render()}" for f in impact.findings]
    lines.append("blocked" if impact.blocked else "ok: " + _verdict(impact))
    return "\n".join(lines)


def _artifacts(impact: Impact) -> str:
    if impact.checked is None:
        if any(f.severity == "error" for f in impact.findings):
            return "not checked: the head's manifests do not load (see below)"
        return "not checked (this plan ran without the artifact checks)"
    if not impact.checked:
        return "no version changes, so no artifact to check"
    return f"checked as the sites would: {', '.join(impact.checked)}; signatures {impact.signatures}"


def _unreported(impact: Impact, limit: int) -> str:
    if impact.unreported is None:
        return "not known: no status records were read"
    return _site_list(impact.unreported, limit) if impact.unreported else "none of the sites that move"


def _verdict(impact: Impact) -> str:
    """What the checks that ran found, and which did not run: never more than was checked."""
    unchecked = [what for what, missing in (
        ("the artifacts", impact.checked is None),
        ("the signatures", bool(impact.checked) and not impact.signatures_verified),
    ) if missing]
    warnings = sum(f.severity == "warning" for f in impact.findings)
    verdict = "No problem found by the checks above" + (f" ({warnings} warning(s))" if warnings else "")
    return verdict + (f"; not checked: {' and '.join(unchecked)}." if unchecked else ".")


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
