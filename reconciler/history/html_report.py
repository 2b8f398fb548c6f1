"""``reconciler report --html DIR``: one self-contained page (DIR/index.html) with the fleet matrix
(stale sites flagged), rollout progress per deployment and wave, every site's timeline as SVG version
bands over time, and the recent deployment changes with authors and signature states.

The page holds everything inline (CSS, SVG, a few lines of script for the site filter) and its
Content Security Policy forbids loading anything, so it opens from a file:// URL with no network.
Every piece of text from the repository is escaped."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path

from reconciler.atomicfile import atomic_write_bytes
from reconciler.delivery.plan import Unplannable, rollout_of, target_for
from reconciler.delivery.rollout import wave_of
from reconciler.history.audit import DeploymentChange, FleetTrail, describe_change, fleet_trail, utc_text
from reconciler.history.drift_html import Trend, drift_section, drift_trends
from reconciler.history.evaluation_html import evaluation_section
from reconciler.history.timeline import Interval, open_fleet, shown_location, site_timeline
from reconciler.manifests.deployments import Deployment
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.models import FleetSpec, Site
from reconciler.manifests.selectors import matches
from reconciler.settings import CommitPolicy
from reconciler.status.matrix import FleetMatrix, SiteRow, build_matrix
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.status.signed import Ignored

# --- the HTML page: its data -----------------------------------------------------------------

RECENT_CHANGES = 50
NO_WAVE = "(no wave)"
FAILING = ("failure", "aborted", "error")
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#e15759",
           "#bab0ac")
NOTHING_SERVED = "#e0e0e0"


@dataclass(frozen=True)
class WaveProgress:
    deployment: str
    wave: str
    versions: tuple[str, ...]  # what the fleet asks of this wave's sites
    healthy: int  # serving the asked version, state success
    failing: int
    total: int


@dataclass(frozen=True)
class ReportData:
    repo: str
    branch: str
    head: str
    now: datetime
    matrix: FleetMatrix
    progress: list[WaveProgress]
    intervals: list[Interval]
    trail: FleetTrail
    drift_trends: Mapping[tuple[str, str], Trend] = field(default_factory=dict)
    ignored: list[Ignored] = field(default_factory=list)  # status records whose signatures do not verify


def rollout_progress(fleet: FleetRepo, records: Mapping[str, StatusRecord], now: datetime) -> list[WaveProgress]:
    """PURE: per deployment and wave (in rollout order), how many of the sites it asks something
    of report that version healthy. A site the plan cannot serve (say, a flag that fails) counts
    as failing; a site a flag switches off is not counted."""
    progress = []
    for name, deployment in sorted(fleet.deployments.items()):
        rollout = rollout_of(fleet, deployment)
        # per wave, per site: (asked version or None, healthy, failing)
        members: dict[str, list[tuple[str | None, bool, bool]]] = {w.name: [] for w in (rollout.waves if rollout else ())}
        for site in sorted(fleet.sites.values(), key=lambda s: s.metadata.name):
            if not matches(deployment.spec.targets, site.metadata.labels):
                continue
            wave = members.setdefault(_wave_name(fleet, deployment, site), [])
            try:
                target = target_for(fleet, deployment, site, now)
            except Unplannable:
                wave.append((None, False, True))
                continue
            if target is None:
                continue
            record = records.get(site.metadata.name)
            cell = record.deployments.get(name) if record else None
            healthy = bool(cell and cell.state == "success" and cell.activeVersion == target.version)
            wave.append((target.version, healthy, bool(cell and cell.state in FAILING)))
        progress += [WaveProgress(name, wave, tuple(sorted({v for v, _, _ in sites if v}, key=_version_key)),
                                  sum(h for _, h, _ in sites), sum(f for _, _, f in sites), len(sites))
                     for wave, sites in members.items() if sites]
    return progress


def _wave_name(fleet: FleetRepo, deployment: Deployment, site: Site) -> str:
    rollout = rollout_of(fleet, deployment)
    wave = wave_of(rollout, deployment.metadata.name, site.metadata.name, site.metadata.labels) if rollout else None
    return wave.name if wave else NO_WAVE


# Every site's newest record and the records ignored, read from elsewhere than the status refs
# (the NATS records bucket), checked against the fleet's Site documents.
CurrentRecords = Callable[[FleetRepo], tuple[Mapping[str, StatusRecord], list[Ignored]]]


def collect_report(location: str, branch: str, policy: CommitPolicy | None, now: datetime,
                   current: CurrentRecords | None = None) -> ReportData:
    """The page's data from Git; with ``current``, the matrix and the rollout progress from what
    it reads instead of the status refs (the timelines and drift trends stay Git's history: the
    audit refs of sites with ``audit: git``)."""
    with open_fleet(location, branch) as opened:
        trail = fleet_trail(opened.source, opened.head, policy)
        archive = opened.status(fleet=trail.latest)
        histories = archive.histories()
    fleet = trail.latest
    latest, ignored = archive.latest, archive.check.ignored if archive.check else []
    if current is not None:  # no fleet that loads, no Site documents to check the records with: none shown
        latest, ignored = current(fleet) if fleet is not None else ({}, [])
    stale_after = (fleet.spec if fleet else FleetSpec()).staleAfter
    matrix = build_matrix(latest, fleet.sites if fleet else (), now, stale_after)
    intervals = [interval for site, history in sorted(histories.items()) for interval in site_timeline(site, history)]
    progress = rollout_progress(fleet, latest, now) if fleet else []
    return ReportData(shown_location(location), branch, opened.head, now, matrix, progress, intervals, trail,
                      drift_trends(histories), ignored)


def write_report(directory: Path, location: str, branch: str, policy: CommitPolicy | None, now: datetime,
                 current: CurrentRecords | None = None) -> Path:
    page = render_html(collect_report(location, branch, policy, now, current))
    path = Path(directory) / "index.html"
    atomic_write_bytes(path, page.encode())
    return path


# --- the HTML page: rendering ----------------------------------------------------------------

def render_html(data: ReportData) -> str:
    """PURE: the whole page."""
    invalid_head = bool(data.trail.invalid) and data.trail.invalid[-1].commit.sha == data.head
    sections = [
        _matrix_section(data.matrix),
        _progress_section(data.progress),
        _timelines_section(data.intervals),
        drift_section({row.site: row.cells for row in data.matrix.rows}, data.drift_trends),
        evaluation_section({row.site: row.cells for row in data.matrix.rows}),
        _changes_section(data.trail, invalid_head),
        *([_ignored_section(data.ignored)] if data.ignored else []),
    ]
    title = f"Fleet report: {data.repo} ({data.branch})"
    return _PAGE.format(
        title=escape(title), css=_CSS, script=_SCRIPT, body="\n".join(sections),
        subtitle=escape(f"{data.branch} at {data.head[:12]} · generated {utc_text(data.now)} · "
                        f"{len(data.matrix.rows)} sites, {len(data.matrix.deployments)} deployments"),
    )


def _ignored_section(ignored: Sequence[Ignored]) -> str:
    rows = "".join(f'<tr><th scope="row">{escape(i.site)}</th><td>{escape(i.commit[:12])}</td><td>{escape(i.why)}</td></tr>'
                   for i in ignored)
    return (f'<section id="ignored"><h2>Status records ignored</h2><p class="note">Their signatures do not verify '
            f'against the keys the Site documents enroll: left out of everything above.</p>'
            f'<table><thead><tr><th>site</th><th>status commit</th><th>why</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></section>')


def _matrix_section(matrix: FleetMatrix) -> str:
    head = "".join(f"<th>{escape(name)}</th>" for name in matrix.deployments)
    rows = []
    for row in matrix.rows:
        written = "never" if row.age is None else utc_text(matrix.now - row.age)
        stale = ' <span class="badge stale">stale</span>' if row.stale else ""
        cells = "".join(f"<td>{_cell(row.cells.get(name))}</td>" for name in matrix.deployments)
        rows.append(f'<tr data-site="{escape(row.site)}" class="{"stale" if row.stale else ""}">'
                    f'<th scope="row"{_runs_on(row)}>{escape(row.site)}{stale}</th><td><span class="state {escape(row.state)}">'
                    f'{escape(row.state)}</span></td><td>{escape(written)}</td>{cells}</tr>')
    summary = ", ".join(f"{count} {escape(state)}" for state, count in matrix.summary().items())
    return (f'<section id="matrix"><h2>Fleet status</h2><p class="note">{len(matrix.rows)} sites: {summary}</p>'
            f'<table><thead><tr><th>site</th><th>state</th><th>record written</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>')


def _runs_on(row: SiteRow) -> str:
    return f' title="{escape(row.inventory.summary())}"' if row.inventory else ""


def _cell(status: DeploymentStatus | None) -> str:
    if status is None:
        return '<span class="none">—</span>'
    served = escape(status.activeVersion or "none")
    if status.version and status.version != status.activeVersion:
        served += f" → {escape(status.version)}"
    wave = f' <span class="wave">{escape(status.wave)}</span>' if status.wave else ""
    provider = f" (on {status.executionProvider})" if status.executionProvider else ""
    return (f'<span class="state {escape(status.state)}" title="{escape(status.reason)}: {escape(status.message)}'
            f'{escape(provider)}">{served}</span>{wave}')


def _progress_section(progress: Sequence[WaveProgress]) -> str:
    rows = []
    for item in progress:
        share = 100 * item.healthy / item.total
        failed = 100 * item.failing / item.total
        rows.append(f'<tr><th scope="row">{escape(item.deployment)}</th><td>{escape(item.wave)}</td>'
                    f'<td>{escape(", ".join(item.versions) or "-")}</td>'
                    f'<td class="count">{item.healthy}/{item.total}</td>'
                    f'<td><div class="bar" title="{item.healthy} healthy, {item.failing} failing of {item.total}">'
                    f'<div class="ok" style="width:{share:.1f}%"></div>'
                    f'<div class="bad" style="width:{failed:.1f}%"></div></div></td>'
                    f'<td class="count">{item.failing}</td></tr>')
    table = (f'<table><thead><tr><th>deployment</th><th>wave</th><th>version</th><th>healthy</th><th></th>'
             f'<th>failing</th></tr></thead><tbody>{"".join(rows)}</tbody></table>') if rows \
        else '<p class="note">No deployments.</p>'
    return f'<section id="rollouts"><h2>Rollout progress</h2>{table}</section>'


# Timeline geometry, in SVG user units.
_LABEL_W, _CHART_W, _ROW_H, _AXIS_H, _TICKS = 160, 800, 16, 22, 6


def _timelines_section(intervals: Sequence[Interval]) -> str:
    if not intervals:
        return '<section id="timelines"><h2>Site timelines</h2><p class="note">No site has written a status ' \
               'record yet.</p></section>'
    by_deployment: dict[str, list[Interval]] = {}
    for interval in intervals:
        by_deployment.setdefault(interval.deployment, []).append(interval)
    # One time axis for every chart, from the first record to the last, so that a report read long
    # after the events still shows them; intervals that still last run to the right edge.
    start = min(i.start for i in intervals)
    end = max(max(i.end or i.start for i in intervals), start + timedelta(minutes=1))
    charts = "".join(_timeline_chart(name, items, start, end) for name, items in sorted(by_deployment.items()))
    return (f'<section id="timelines"><h2>Site timelines</h2><p class="note">From the first status record '
            f"({utc_text(start)}) to the last ({utc_text(end)}).</p>{charts}</section>")


def _timeline_chart(deployment: str, intervals: list[Interval], start: datetime, end: datetime) -> str:
    span = (end - start).total_seconds()

    def x(moment: datetime) -> float:
        return _LABEL_W + _CHART_W * (moment - start).total_seconds() / span

    by_site: dict[str, list[Interval]] = {}
    for interval in intervals:
        by_site.setdefault(interval.site, []).append(interval)
    colours = _colours(i.version for i in intervals)
    height = _AXIS_H + len(by_site) * _ROW_H
    width = _LABEL_W + _CHART_W + 10
    parts = [f'<svg class="timeline" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
             f"<title>{escape(deployment)}: the version each site served over time</title>"]
    tick_format = "%m-%d %H:%M" if span < 300 * 86400 else "%Y-%m-%d"
    for tick in range(_TICKS + 1):
        moment = start + (end - start) * tick / _TICKS
        anchor = "start" if tick == 0 else "end" if tick == _TICKS else "middle"
        parts.append(f'<line class="tick" x1="{x(moment):.1f}" x2="{x(moment):.1f}" y1="{_AXIS_H - 4}" '
                     f'y2="{height}"/><text class="axis" x="{x(moment):.1f}" y="12" text-anchor="{anchor}">'
                     f"{escape(moment.astimezone(UTC).strftime(tick_format))}</text>")
    for row, (site, bands) in enumerate(sorted(by_site.items())):
        y = _AXIS_H + row * _ROW_H
        parts.append(f'<g data-site="{escape(site)}"><text class="site" x="{_LABEL_W - 6}" y="{y + _ROW_H - 4}" '
                     f'text-anchor="end">{escape(site)}</text>')
        parts += [_band(band, x(band.start), x(band.end or end), y, colours[band.version]) for band in bands]
        parts.append("</g>")
    parts.append("</svg>")
    legend = "".join(f'<span class="swatch" style="background:{colour}"></span>{escape(version or "nothing")} '
                     for version, colour in colours.items())
    return (f'<figure><figcaption><strong>{escape(deployment)}</strong> <span class="legend">{legend}'
            f'<span class="swatch failure-key"></span>failing</span></figcaption>{"".join(parts)}</figure>')


def _band(interval: Interval, left: float, right: float, y: int, colour: str) -> str:
    width = max(right - left, 1.0)
    wants = f", wants {interval.desired}" if interval.desired and interval.desired != interval.version else ""
    until = utc_text(interval.end) if interval.end else "its newest record, and on"
    tip = (f"{interval.site} · {interval.deployment}: {interval.version or 'nothing'} ({interval.state}{wants}) "
           f"from {utc_text(interval.start)} to {until}")
    band = (f'<rect class="band {escape(interval.state)}" x="{left:.1f}" y="{y + 1}" width="{width:.1f}" '
            f'height="{_ROW_H - 2}" fill="{colour}"><title>{escape(tip)}</title></rect>')
    label = interval.version or "none"
    if width > 8 * len(label) + 6:  # room for the version's name inside the band
        band += f'<text class="version" x="{left + 3:.1f}" y="{y + _ROW_H - 4}">{escape(label)}</text>'
    return band


def _colours(versions: Iterable[str | None]) -> dict[str | None, str]:
    """One colour per version, in version order."""
    seen = set(versions)
    named = sorted((v for v in seen if v is not None), key=_version_key)
    colours: dict[str | None, str] = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(named)}
    if None in seen:
        colours[None] = NOTHING_SERVED
    return colours


def _version_key(version: str) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[.+_-]", version))


def _changes_section(trail: FleetTrail, invalid_head: bool) -> str:
    recent: list[DeploymentChange] = trail.changes[::-1][:RECENT_CHANGES]
    rows = "".join(
        f'<tr><td>{escape(utc_text(c.commit.committer_date))}</td>'
        f'<td><code title="{escape(c.commit.sha)}">{escape(c.commit.sha[:12])}</code></td>'
        f'<td>{escape(c.deployment)}</td><td>{escape(describe_change(c))}</td><td>{escape(c.commit.author)}</td>'
        f'<td>{_signature(c)}</td><td>{escape(c.commit.subject)}</td></tr>'
        for c in recent)
    table = (f'<table><thead><tr><th>committed</th><th>commit</th><th>deployment</th><th>change</th><th>author</th>'
             f'<th>signature</th><th>subject</th></tr></thead><tbody>{rows}</tbody></table>') if recent \
        else '<p class="note">No deployment changes.</p>'
    refused = "".join(f'<li><code>{escape(b.commit.sha[:12])}</code> by {escape(b.commit.author)}: '
                      f'{escape(b.first_error)}</li>' for b in trail.invalid[::-1][:RECENT_CHANGES])
    warning = '<p class="warn">The branch head does not load: sites stay on the last commit that did.</p>' \
        if invalid_head else ""
    invalid = f"<h3>Commits whose manifests did not load</h3>{warning}<ul>{refused}</ul>" if refused else ""
    shown = f"the latest {len(recent)} of {len(trail.changes)}" if len(trail.changes) > len(recent) else "all"
    return (f'<section id="changes"><h2>Deployment changes</h2><p class="note">Newest first, {shown}.</p>'
            f"{table}{invalid}</section>")


def _signature(change: DeploymentChange) -> str:
    signature = change.signature
    if signature is None:
        return "-"
    who = f" ({escape(signature.signer)})" if signature.signer else ""
    return f'<span class="sig {escape(signature.state)}" title="{escape(signature.key)}">{escape(signature.state)}' \
           f"</span>{who}"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header><h1>{title}</h1><p class="note">{subtitle}</p>
<label>Filter sites <input id="filter" type="search" placeholder="site name"></label>
<nav><a href="#matrix">status</a> <a href="#rollouts">rollouts</a> <a href="#timelines">timelines</a>
<a href="#changes">changes</a></nav></header>
<main>
{body}
</main>
<script>{script}</script>
</body>
</html>
"""

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.note { color: #666; margin: .3em 0; } .warn { color: #b71c1c; }
nav a { margin-right: 1em; } label { display: inline-block; margin: .5em 0; }
table { border-collapse: collapse; } th, td { padding: 2px 8px; text-align: left; border-bottom: 1px solid #eee; }
thead th { background: #f5f5f5; } td.count { text-align: right; font-variant-numeric: tabular-nums; }
tr.stale th { color: #8d6e00; }
.badge.stale { background: #fff3cd; color: #8d6e00; border-radius: 3px; padding: 0 4px; font-size: .8em; }
.state.success { color: #1b5e20; } .state.failure, .state.error, .state.aborted { color: #b71c1c; font-weight: bold; }
.state.pending, .state.progressing { color: #0d47a1; } .state.unknown, .none { color: #999; }
.wave { color: #777; font-size: .85em; }
.bar { width: 200px; height: 10px; background: #eee; display: flex; }
.bar .ok { background: #59a14f; } .bar .bad { background: #e15759; }
.sig.good { color: #1b5e20; font-weight: bold; } .sig.bad, .sig.revoked, .sig.expired { color: #b71c1c; font-weight: bold; }
.sig.unsigned, .sig.unknown-key, .sig.cannot-check { color: #8d6e00; }
figure { margin: 1em 0; } .legend { margin-left: 1em; color: #555; }
.swatch { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px; vertical-align: middle; }
.swatch.failure-key { border: 2px solid #b71c1c; width: 6px; height: 6px; }
svg.timeline { display: block; font-size: 10px; max-width: 100%; height: auto; }
svg .tick { stroke: #eee; } svg .axis { fill: #777; } svg .site { fill: #333; }
svg .version { fill: #fff; pointer-events: none; }
svg .band.failure, svg .band.error, svg .band.aborted { stroke: #b71c1c; stroke-width: 2; }
svg .band.pending, svg .band.progressing { opacity: .55; }
"""

_SCRIPT = """
document.getElementById("filter").addEventListener("input", function (event) {
  var needle = event.target.value.trim().toLowerCase();
  document.querySelectorAll("[data-site]").forEach(function (node) {
    node.style.display = !needle || node.getAttribute("data-site").indexOf(needle) >= 0 ? "" : "none";
  });
});
"""
