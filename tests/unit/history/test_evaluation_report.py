"""`reconciler status --evaluation` and the report's Evaluation section: per deployment and version,
each site's scores beside the replaced version's, and the example-weighted fleet value."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.history.evaluation_html import evaluation_section
from reconciler.monitoring.evaluation import EvaluationSummary
from reconciler.status.evaluation_view import render_text, site_evaluations, to_json
from reconciler.status.record import DeploymentStatus

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def status(evaluation: EvaluationSummary | None) -> dict[str, DeploymentStatus]:
    return {"churn": DeploymentStatus(model="churn", state="success", version="1.1.0", reason="Converged", since=T0,
                                      evaluation=evaluation)}


LATEST = {
    "store-a": status(EvaluationSummary(version="1.1.0", numExamples=100, metrics={"accuracy": 0.9, "auc": 0.95},
                                        previousVersion="1.0.0", previousMetrics={"accuracy": 0.8}, evaluatedAt=T0)),
    "store-<b>": status(EvaluationSummary(version="1.1.0", numExamples=300, metrics={"accuracy": 0.5},
                                          evaluatedAt=T0)),
    "store-c": status(EvaluationSummary(version="1.1.0", evaluatedAt=T0, reason="EvaluationDataInvalid",
                                        message="evaluation data /data/e.csv: cannot be read")),
    "store-d": status(None),
}


def test_the_text_view_shows_each_site_and_the_weighted_fleet_value():
    text = render_text(site_evaluations(LATEST))
    assert "0.9000 (0.8000)" in text and "EvaluationDataInvalid" in text and "store-d" not in text
    assert "fleet churn 1.1.0: accuracy 0.6000 over 2 site(s), 400 examples, +0.1000 over replaced" in text
    view = to_json(site_evaluations(LATEST))
    assert [row["site"] for row in view["sites"]] == ["store-<b>", "store-a", "store-c"]
    accuracy = next(f for f in view["fleet"] if f["metric"] == "accuracy")
    assert (accuracy["value"], accuracy["examples"], accuracy["gain"]) == (0.6, 400, pytest.approx(0.1))


def test_the_report_section_escapes_what_the_records_say():
    html = evaluation_section(LATEST)
    assert "store-&lt;b&gt;" in html and "store-<b>" not in html
    assert "<h3>churn 1.1.0</h3>" in html and "<td>0.6000</td>" in html


def test_without_scores_the_sections_say_why():
    assert "no site reports scores" in render_text([])
    assert "No site reports scores" in evaluation_section({"store-d": status(None)})
