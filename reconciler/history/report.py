"""How the audit is shown (the commands are reconciler.cli.audit): as text, JSON (documented in
reconciler.history.timeline) or CSV.

CSV: ``audit`` gives one row per change (kind ``change``) and per timeline interval (kind
``interval``) under one header, TRAIL_COLUMNS; ``audit --at`` one row per site and deployment,
AT_COLUMNS; a site with no record by then has one row, state ``unknown``, and so has a site whose
record holds none of the deployments asked for (with the record's state)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from reconciler.history.audit import (
    Signature,
    describe_change,
    utc_text,
)
from reconciler.history.timeline import (
    AuditTrail,
    FleetAt,
)
from reconciler.status.record import DeploymentStatus

TRAIL_COLUMNS = ("kind", "time", "end", "site", "deployment", "version_from", "version", "desired_version", "state",
                 "wave", "commit", "observed_commit", "author", "committer", "signature", "changed", "subject")
AT_COLUMNS = ("site", "deployment", "version", "desired_version", "state", "wave", "written_at", "status_commit",
              "observed_commit")


def trail_text(trail: AuditTrail) -> str:
    lines = [f"Deployment changes on {trail.branch} (head {trail.head[:12]}): {len(trail.changes)}"]
    lines += _table(["COMMITTED", "COMMIT", "DEPLOYMENT", "CHANGE", "AUTHOR", "SIGNATURE", "SUBJECT"],
                    [[utc_text(c.commit.committer_date), c.commit.sha[:12], c.deployment, describe_change(c),
                      c.commit.author, _signature_text(c.signature), c.commit.subject] for c in trail.changes])
    if trail.invalid:
        lines += ["", f"Commits whose manifests did not load (sites refused them): {len(trail.invalid)}"]
        lines += _table(["COMMITTED", "COMMIT", "AUTHOR", "ERRORS", "FIRST ERROR"],
                        [[utc_text(b.commit.committer_date), b.commit.sha[:12], b.commit.author, str(b.errors),
                          b.first_error] for b in trail.invalid])
    lines += ["", f"Site timelines: {len(trail.intervals)} intervals"]
    lines += _table(["SITE", "DEPLOYMENT", "FROM", "TO", "SERVED", "DESIRED", "STATE", "WAVE", "OBSERVED"],
                    [[i.site, i.deployment, utc_text(i.start), utc_text(i.end) if i.end else "now", i.version or "-",
                      i.desired or "-", i.state, i.wave or "-", (i.observed_commit or "-")[:12]]
                     for i in trail.intervals])
    if trail.batch_runs:
        lines += ["", f"Batch runs: {len(trail.batch_runs)}"]
        lines += _table(["SITE", "DEPLOYMENT", "STARTED", "STATE", "TRIGGER", "VERSION", "FILES", "RECORDS", "ERRORS"],
                        [[b.site, b.deployment, utc_text(b.run.started), b.run.state, b.run.trigger, b.run.version or "-",
                          str(b.run.files), str(b.run.records), str(b.run.recordErrors)] for b in trail.batch_runs])
    if trail.ignored:
        lines += ["", f"Status records ignored (their signatures do not verify): {len(trail.ignored)}"]
        lines += _table(["SITE", "STATUS COMMIT", "WHY"], [[i.site, i.commit[:12], i.why] for i in trail.ignored])
    return "\n".join(lines)


def at_text(view: FleetAt) -> str:
    asked = ", ".join(f"{name} {version}" for name, version in sorted(view.desired.items())) or "nothing"
    commit = f"at {view.fleet_commit[:12]}" if view.fleet_commit else "not yet created"
    names = sorted({name for row in view.sites for name in row.deployments} | set(view.desired))
    lines = [f"Fleet at {utc_text(view.at)}: {view.branch} was {commit}, asking {asked}"]
    lines += _table(["SITE", "STATE", "RECORD WRITTEN", *names],
                    [[row.site, row.state, utc_text(row.record.writtenAt) if row.record else "-",
                      *(_served_text(row.deployments.get(name)) for name in names)] for row in view.sites])
    return "\n".join(lines)


def _served_text(status: DeploymentStatus | None) -> str:
    if status is None:
        return "-"
    text = status.activeVersion or "none"
    if status.version and status.version != status.activeVersion:
        text += f" (wants {status.version})"
    return text if status.state == "success" else f"{text} {status.state}"


def _signature_text(signature: Signature | None) -> str:
    if signature is None:
        return "-"
    return f"{signature.state} ({signature.signer})" if signature.signer else signature.state


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    table = [header, *rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return ["  " + "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
            for line in table]


def trail_csv(trail: AuditTrail) -> str:
    rows = [{"kind": "change", "time": c.commit.committer_date.isoformat(), "deployment": c.deployment,
             "version_from": c.version_from, "version": c.version_to, "commit": c.commit.sha,
             "author": c.commit.author, "committer": c.commit.committer,
             "signature": c.signature.state if c.signature else None, "changed": ";".join(c.changed),
             "subject": c.commit.subject} for c in trail.changes]
    rows += [{"kind": "interval", "time": i.start.isoformat(), "end": i.end.isoformat() if i.end else None,
              "site": i.site, "deployment": i.deployment, "version": i.version, "desired_version": i.desired,
              "state": i.state, "wave": i.wave, "commit": i.status_commit, "observed_commit": i.observed_commit}
             for i in trail.intervals]
    return _csv(TRAIL_COLUMNS, rows)


def at_csv(view: FleetAt) -> str:
    rows: list[dict[str, Any]] = []
    for row in view.sites:
        common = {"site": row.site, "status_commit": row.status_commit,
                  "written_at": row.record.writtenAt.isoformat() if row.record else None,
                  "observed_commit": row.record.observedCommit if row.record else None}
        if not row.deployments:
            rows.append({**common, "state": row.state})
        rows += [{**common, "deployment": name, "version": status.activeVersion, "desired_version": status.version,
                  "state": status.state, "wave": status.wave} for name, status in sorted(row.deployments.items())]
    return _csv(AT_COLUMNS, rows)


def _csv(columns: Sequence[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()
