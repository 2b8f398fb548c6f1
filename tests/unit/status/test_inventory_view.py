"""The fleet view of what each site runs on: a record's inventory in one line, carried into the
matrix, shown as the HTML report's tooltips beside the provider that serves each deployment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from reconciler.history.audit import FleetTrail
from reconciler.history.html_report import ReportData, render_html
from reconciler.status.matrix import build_matrix
from reconciler.status.record import DeploymentStatus, SiteInventory, StatusRecord

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
INVENTORY = SiteInventory(os="Debian GNU/Linux 12 (bookworm)", kernel="6.1.0", arch="aarch64", cpus=4,
                          memoryMiB=7851, onnxruntime="1.20.0",
                          executionProviders=["CUDAExecutionProvider", "CPUExecutionProvider"], collectedAt=NOW)


def record(site: str, inventory: SiteInventory | None) -> StatusRecord:
    cell = DeploymentStatus(model="m", state="success", version="1.0.0", activeVersion="1.0.0", reason="Converged",
                            since=NOW, executionProvider="CUDAExecutionProvider" if inventory else None)
    return StatusRecord(site=site, state="success", reason="Converged", agentVersion="0.1.0", writtenAt=NOW,
                        deployments={"d": cell}, inventory=inventory)


class Titles(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.titles += [value for name, value in attrs if name == "title" and value]


def test_an_inventory_reads_in_one_line() -> None:
    assert INVENTORY.summary() == ("Debian GNU/Linux 12 (bookworm), aarch64, 4 CPUs, 7851 MiB, onnxruntime 1.20.0 "
                                   "(CUDAExecutionProvider, CPUExecutionProvider)")
    assert "MiB" not in INVENTORY.model_copy(update={"memoryMiB": None}).summary()


def test_the_report_shows_what_each_site_runs_on_and_what_serves_each_deployment() -> None:
    records = {"gpu-1": record("gpu-1", INVENTORY), "old-1": record("old-1", None)}
    matrix = build_matrix(records, ["gpu-1", "old-1", "never-1"], NOW, timedelta(minutes=10))
    assert [row.inventory for row in matrix.rows] == [INVENTORY, None, None]
    parser = Titles()
    parser.feed(render_html(ReportData("repo", "main", "c" * 40, NOW, matrix, [], [], FleetTrail([], [], None))))
    assert INVENTORY.summary() in parser.titles
    assert "Converged:  (on CUDAExecutionProvider)" in parser.titles
    assert "Converged: " in parser.titles  # a site without inventory or provider: the tooltip as before
