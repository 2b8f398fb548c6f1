"""The drift part of the HTML report (pure): worst site first, one point per closed window in the
trend, every text from the records escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.history.drift_html import drift_section, drift_trends
from reconciler.monitoring.windows import DriftSummary
from reconciler.status.record import DeploymentStatus, StatusRecord

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
EVIL = "<b>x</b>&"


def record(site: str, minutes: int, windows: int, score: float, detected: bool = False) -> StatusRecord:
    drift = DriftSummary(version="1.0.0", profile="sha256:p", state="DriftDetected" if detected else "NoDrift",
                         windows=windows, rows=1000, drifted=[EVIL] if detected else [],
                         features={EVIL: f"score={score} psi=0.01 bins=1,2,3", "f2": "score=0.01 psi=0 bins=3,2,1"})
    status = DeploymentStatus(model="m", state="success", version="1.0.0", activeVersion="1.0.0", reason="Converged",
                              since=T0, drift=drift)
    return StatusRecord(site=site, state="success", reason="Converged", deployments={"d": status},
                        agentVersion="t", writtenAt=T0 + timedelta(minutes=minutes))


def test_the_heatmap_lists_the_drifted_site_first_and_escapes_feature_names():
    latest = {"calm": record("calm", 5, 4, 0.02), "shifted": record("shifted", 5, 4, 0.25, detected=True)}
    html = drift_section({site: r.deployments for site, r in latest.items()}, {})
    assert html.index("shifted") < html.index("calm")
    assert EVIL not in html and "&lt;b&gt;x&lt;/b&gt;&amp;" in html
    assert "0.250*" in html and "0.020<" in html


def test_a_trend_has_one_point_per_closed_window_and_marks_drift():
    history = [("c1", record("s", 1, 1, 0.05)), ("c2", record("s", 2, 1, 0.05)),  # the same window twice
               ("c3", record("s", 3, 2, 0.12)), ("c4", record("s", 4, 3, 0.3, detected=True))]
    trends = drift_trends({"s": history})
    assert [(score, detected) for _, score, detected in trends[("s", "d")]] == [(0.05, False), (0.12, False),
                                                                               (0.3, True)]
    html = drift_section({"s": history[-1][1].deployments}, trends)
    assert html.count("<svg") == 1 and html.count("<circle") == 1


def test_no_drift_anywhere_says_so():
    assert "No site reports drift" in drift_section({}, {})
