"""The drift part of ``reconciler report --html`` (PURE: records in, HTML out): per deployment a
heatmap of sites x features from the latest records, worst site first, each cell the last closed
window's score (JS distance, or L-infinity for categories), and per site the trend of its worst
score across the record history, as a small inline SVG line. Every text from the records is escaped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape

from reconciler.history.audit import utc_text
from reconciler.monitoring.windows import DRIFT_DETECTED, DriftSummary
from reconciler.status.record import DeploymentStatus, StatusRecord

HEAT_FULL = 0.3  # a score drawn in the deepest red: three times the default JS threshold
TREND_POINTS = 120  # the newest points of a trend drawn
TREND_WIDTH, TREND_HEIGHT = 160, 28

Trend = list[tuple[datetime, float, bool]]  # (record written, worst score, DriftDetected)


def drift_trends(histories: Mapping[str, Sequence[tuple[str, StatusRecord]]]) -> dict[tuple[str, str], Trend]:
    """Per (site, deployment), the worst score of each record that carries a new closed window."""
    trends: dict[tuple[str, str], Trend] = {}
    for site, history in histories.items():
        last: dict[str, tuple[str, int]] = {}
        for _, record in history:
            for name, status in record.deployments.items():
                drift = status.drift
                if drift is None or last.get(name) == (drift.version, drift.windows):
                    continue
                last[name] = (drift.version, drift.windows)
                trends.setdefault((site, name), []).append(
                    (record.writtenAt, drift.worst(), drift.state == DRIFT_DETECTED))
    return {key: points[-TREND_POINTS:] for key, points in trends.items()}


def drift_section(latest: Mapping[str, Mapping[str, DeploymentStatus]], trends: Mapping[tuple[str, str], Trend]) -> str:
    """``latest``: per site, its latest record's deployments."""
    by_deployment: dict[str, list[tuple[str, DriftSummary]]] = {}
    for site, deployments in latest.items():
        for name, status in deployments.items():
            if status.drift is not None:
                by_deployment.setdefault(name, []).append((site, status.drift))
    if not by_deployment:
        return ("<section><h2>Drift</h2><p class=\"muted\">No site reports drift: no deployed version names a "
                "reference profile, or no window has closed yet.</p></section>")
    tables = [_heatmap(name, rows, trends) for name, rows in sorted(by_deployment.items())]
    return ("<section><h2>Drift</h2><p class=\"muted\">The last closed window of each site, worst first; "
            "* marks a drifted feature. The trend is the site's worst score per window.</p>"
            + "".join(tables) + "</section>")


def _heatmap(deployment: str, rows: list[tuple[str, DriftSummary]], trends: Mapping[tuple[str, str], Trend]) -> str:
    rows = sorted(rows, key=lambda row: (row[1].state != DRIFT_DETECTED, -row[1].worst(), row[0]))
    features = list(dict.fromkeys(name for _, summary in rows for name in summary.features))
    head = "".join(f"<th>{escape(name)}</th>" for name in features)
    body = []
    for site, summary in rows:
        cells = "".join(_heat_cell(summary, name) for name in features)
        body.append(f"<tr><td>{escape(site)}</td><td>{escape(summary.version)}</td><td>{escape(summary.state)}</td>"
                    f"<td>{summary.rows}</td>{cells}<td>{_trend_svg(trends.get((site, deployment), []))}</td></tr>")
    return (f"<h3>{escape(deployment)}</h3><table><tr><th>site</th><th>version</th><th>state</th><th>rows</th>"
            f"{head}<th>trend</th></tr>{''.join(body)}</table>")


def _heat_cell(summary: DriftSummary, name: str) -> str:
    feature = summary.features.get(name)
    if feature is None:
        return "<td>-</td>"
    share = min(1.0, feature.score / HEAT_FULL)
    colour = f"rgb(255,{round(255 - 175 * share)},{round(255 - 205 * share)})"
    mark = "*" if name in summary.drifted else ""
    return f'<td style="background:{colour}" title="PSI {feature.psi:g}">{feature.score:.3f}{mark}</td>'


def _trend_svg(points: Trend) -> str:
    if len(points) < 2:
        return ""
    top = max(HEAT_FULL, max(score for _, score, _ in points))
    step = TREND_WIDTH / (len(points) - 1)
    line = " ".join(f"{i * step:.1f},{TREND_HEIGHT - score / top * TREND_HEIGHT:.1f}"
                    for i, (_, score, _) in enumerate(points))
    drifted = "".join(f'<circle cx="{i * step:.1f}" cy="{TREND_HEIGHT - score / top * TREND_HEIGHT:.1f}" r="2" '
                      f'fill="#e15759"/>' for i, (_, score, detected) in enumerate(points) if detected)
    title = f"{utc_text(points[0][0])} to {utc_text(points[-1][0])}, {len(points)} windows"
    return (f'<svg width="{TREND_WIDTH}" height="{TREND_HEIGHT}" role="img"><title>{escape(title)}</title>'
            f'<polyline points="{line}" fill="none" stroke="#4e79a7"/>{drifted}</svg>')
