"""The fleet matrix: sites × deployments from the status records in Git, with stale sites
flagged. Pure: records, inventory and ``now`` come in; text, markdown or JSON go out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from reconciler import reasons
from reconciler.status.record import DeploymentStatus, SiteInventory, StatusRecord

NEVER_REPORTED = "unknown"
MARK = {"success": "", "pending": " (pending)", "progressing": " (progressing)", "failure": " FAILED",
        "aborted": " ABORTED", "error": " ERROR"}


@dataclass(frozen=True)
class SiteRow:
    site: str
    state: str  # a record's state, or "unknown" for a site that never reported
    reason: str
    age: timedelta | None  # since the record was written
    stale: bool
    observed_commit: str | None
    cells: dict[str, DeploymentStatus] = field(default_factory=dict)
    inventory: SiteInventory | None = None  # what the site runs on, as its newest record says


@dataclass(frozen=True)
class FleetMatrix:
    rows: list[SiteRow]
    deployments: list[str]
    now: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "generatedAt": self.now.isoformat(),
            "deployments": self.deployments,
            "sites": [
                {
                    "site": row.site,
                    "state": row.state,
                    "reason": row.reason,
                    "ageSeconds": round(row.age.total_seconds()) if row.age is not None else None,
                    "stale": row.stale,
                    "observedCommit": row.observed_commit,
                    "deployments": {name: cell.model_dump(mode="json") for name, cell in row.cells.items()},
                }
                for row in self.rows
            ],
            "summary": self.summary(),
        }

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.state] = counts.get(row.state, 0) + 1
        counts["stale"] = sum(row.stale for row in self.rows)
        return dict(sorted(counts.items()))


def build_matrix(records: Mapping[str, StatusRecord], inventory: Iterable[str], now: datetime,
                 stale_after: timedelta) -> FleetMatrix:
    """One row per site of the inventory (the fleet repo's Sites) and per site that reported
    without being in it any more; a site is stale when its newest record is older than
    ``stale_after`` or it never reported."""
    rows = []
    for site in sorted(set(inventory) | set(records)):
        record = records.get(site)
        if record is None:
            rows.append(SiteRow(site, NEVER_REPORTED, reasons.NeverReported, None, True, None))
            continue
        age = now - record.writtenAt
        rows.append(SiteRow(site, record.state, record.reason, age, age > stale_after, record.observedCommit,
                            dict(record.deployments), record.inventory))
    deployments = sorted({name for row in rows for name in row.cells})
    return FleetMatrix(rows, deployments, now)


def render_text(matrix: FleetMatrix) -> str:
    header = ["SITE", "STATE", "AGE", *matrix.deployments]
    table = [header] + [[_site_label(row), row.state, _age(row.age),
                         *(_cell(row.cells.get(name)) for name in matrix.deployments)] for row in matrix.rows]
    return "\n".join([*aligned(table), _summary_line(matrix)])


def aligned(table: list[list[str]]) -> list[str]:
    """The rows of ``table`` as lines, each column as wide as its widest value."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return ["  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
            for line in table]


def render_markdown(matrix: FleetMatrix) -> str:
    header = ["site", "state", "age", *matrix.deployments]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in matrix.rows:
        cells = [f"`{row.site}`" + (" ⚠ stale" if row.stale else ""), row.state, _age(row.age),
                 *(_cell(row.cells.get(name)) or "—" for name in matrix.deployments)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", _summary_line(matrix)])


def _site_label(row: SiteRow) -> str:
    return row.site + (" (stale)" if row.stale else "")


def _cell(status: DeploymentStatus | None) -> str:
    if status is None:
        return ""
    wave = f" [{status.wave}]" if status.wave else ""
    kind = f" ({status.failureKind}: {status.reason})" if status.failureKind else ""  # version evidence or site condition
    run = status.lastBatchRun
    batch = f" (batch {run.state}: {run.files} files, {run.records} records, {run.recordErrors} record errors)" \
        if run else ""
    return f"{status.version_shown}{wave}{MARK[status.state]}{kind}{batch}"


def _age(age: timedelta | None) -> str:
    if age is None:
        return "never"
    seconds = max(0, int(age.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _summary_line(matrix: FleetMatrix) -> str:
    return f"{len(matrix.rows)} sites: " + ", ".join(f"{n} {state}" for state, n in matrix.summary().items())
