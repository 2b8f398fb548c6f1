"""The fleet matrix, table-driven over records and times."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from reconciler.status.matrix import build_matrix, render_markdown, render_text
from reconciler.status.record import DeploymentStatus, StatusRecord

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def record(site: str, written_ago: timedelta, **deployments: tuple[str, str | None, str]) -> StatusRecord:
    cells = {name: DeploymentStatus(model="m", state=state, version=version, activeVersion=active, reason="r",
                                    since=NOW - written_ago, wave="pilot")
             for name, (state, active, version) in deployments.items()}
    worst = "failure" if any(s == "failure" for s, _, _ in deployments.values()) else "success"
    return StatusRecord(site=site, state=worst, reason="Converged", deployments=cells, agentVersion="0",
                        writtenAt=NOW - written_ago, observedCommit="c0ffee")


RECORDS = {
    "store-a": record("store-a", timedelta(seconds=30), forecast=("success", "1.1.0", "1.1.0")),
    "store-b": record("store-b", timedelta(hours=2), forecast=("failure", "1.0.0", "1.1.0"),
                      fraud=("success", "3.2.0", "3.2.0")),
}


def test_rows_cover_inventory_and_flag_stale_and_silent_sites():
    matrix = build_matrix(RECORDS, ["store-a", "store-b", "store-c"], NOW, timedelta(minutes=10))
    assert [(r.site, r.state, r.stale) for r in matrix.rows] == [
        ("store-a", "success", False), ("store-b", "failure", True), ("store-c", "unknown", True)]
    assert matrix.deployments == ["forecast", "fraud"]
    assert matrix.summary() == {"failure": 1, "stale": 2, "success": 1, "unknown": 1}


def test_text_shows_versions_moves_and_failures():
    text = render_text(build_matrix(RECORDS, ["store-a", "store-b"], NOW, timedelta(minutes=10)))
    lines = text.splitlines()
    assert lines[0].split() == ["SITE", "STATE", "AGE", "forecast", "fraud"]
    assert "1.1.0 [pilot]" in lines[1] and "30s" in lines[1]
    assert "store-b (stale)" in lines[2] and "1.0.0->1.1.0 [pilot] FAILED" in lines[2] and "2h" in lines[2]


def test_markdown_and_json_are_complete():
    matrix = build_matrix(RECORDS, [], NOW, timedelta(minutes=10))
    markdown = render_markdown(matrix)
    assert markdown.splitlines()[0] == "| site | state | age | forecast | fraud |"
    assert "`store-b` ⚠ stale" in markdown
    data = json.loads(json.dumps(matrix.to_json()))
    assert data["sites"][1]["deployments"]["forecast"]["version"] == "1.1.0"
    assert data["sites"][0]["ageSeconds"] == 30


def test_a_failure_says_whether_it_is_version_evidence_or_a_site_condition():
    def failing(state: str, reason: str, kind: str) -> StatusRecord:
        cell = DeploymentStatus(model="m", state=state, version="1.1.0", activeVersion="1.0.0", reason=reason,
                                failureKind=kind, since=NOW)
        return StatusRecord(site=f"store-{kind}", state=state, reason=reason, deployments={"forecast": cell},
                            agentVersion="0", writtenAt=NOW)
    records = {"store-site": failing("error", "NoTrustedKeys", "site"),
               "store-version": failing("failure", "ValidationFailed", "version")}
    matrix = build_matrix(records, list(records), NOW, timedelta(minutes=10))
    lines = render_text(matrix).splitlines()
    assert "1.0.0->1.1.0 ERROR (site: NoTrustedKeys)" in lines[1]
    assert "1.0.0->1.1.0 FAILED (version: ValidationFailed)" in lines[2]
    assert matrix.to_json()["sites"][0]["deployments"]["forecast"]["failureKind"] == "site"


def test_a_version_shows_what_is_served_and_what_is_asked():
    shown = {(active, version): DeploymentStatus(model="m", state="progressing", version=version, activeVersion=active,
                                                 reason="r", since=NOW).version_shown
             for active, version in [("1.0.0", "1.1.0"), ("1.1.0", "1.1.0"), (None, "1.0.0"), ("1.0.0", None),
                                     (None, None)]}
    assert shown == {("1.0.0", "1.1.0"): "1.0.0->1.1.0", ("1.1.0", "1.1.0"): "1.1.0", (None, "1.0.0"): "->1.0.0",
                     ("1.0.0", None): "1.0.0", (None, None): "-"}
