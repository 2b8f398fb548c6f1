"""The HTML report: rollout progress (pure, table-driven), escaping, a page that loads nothing
from anywhere (checked statically, and in headless Chromium when it is installed), and the command."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from audit_commands import run_command
from fleetfactory import deployment, fleet_repo, model, site

from reconciler.devtools.audit_history import (
    CAROL,
    SILENT_SITE,
    SITES,
    ScriptedHistory,
    minutes,
    scripted_history,
)
from reconciler.history.audit import DeploymentChange, FleetCommit, FleetTrail, Signature
from reconciler.history.html_report import (
    NO_WAVE,
    ReportData,
    render_html,
    rollout_progress,
    write_report,
)
from reconciler.history.timeline import Interval
from reconciler.settings import CommitPolicy
from reconciler.status.matrix import build_matrix
from reconciler.status.record import DeploymentStatus, StatusRecord

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or \
    ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> ScriptedHistory:
    return scripted_history(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def page(history: ScriptedHistory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    policy = CommitPolicy(ssh_allowed_signers=history.allowed_signers) if history.signed else None
    return write_report(tmp_path_factory.mktemp("html"), str(history.bare), "main", policy, minutes(250))


# --- rollout progress ---------------------------------------------------------------------------

SITES_BY_RING = [site("c-1", ring="canary"), site("e-1", ring="early"), site("e-2", ring="early"),
                 site("r-1", ring="rest"), site("r-2", ring="rest"), site("off", ring="rest", region="cn")]
WAVES = {"waves": [{"name": "canary", "selector": {"matchLabels": {"ring": "canary"}}},
                   {"name": "early", "selector": {"matchLabels": {"ring": "early"}}},
                   {"name": "rest", "percent": 100}]}
FLAGS = {"on": {"state": "ENABLED", "variants": {"yes": True, "no": False}, "defaultVariant": "yes",
                "targeting": {"if": [{"==": [{"var": "region"}, "cn"]}, "no", "yes"]}}}


def record(name: str, state: str = "success", active: str = "1.1.0", desired: str = "1.1.0") -> StatusRecord:
    cell = DeploymentStatus(model="m", state=state, activeVersion=active, version=desired, reason="r", since=NOW)
    return StatusRecord(site=name, state=state, reason="r", agentVersion="t", writtenAt=NOW, deployments={"d": cell})


@pytest.mark.parametrize(("spec", "records", "expected"), [
    # nobody reported: nothing healthy yet, every wave counted
    ({"version": "1.1.0", "rollout": WAVES}, {},
     [("canary", 0, 0, 1), ("early", 0, 0, 2), ("rest", 0, 0, 3)]),
    ({"version": "1.1.0", "rollout": WAVES},
     {"c-1": record("c-1"), "e-1": record("e-1"), "e-2": record("e-2", "failure", "1.0.0"),
      "r-1": record("r-1", active="1.0.0", desired="1.0.0")},
     [("canary", 1, 0, 1), ("early", 1, 1, 2), ("rest", 0, 0, 3)]),
    # a flag switches the deployment off at one site: it is not counted
    ({"version": "1.1.0", "rollout": WAVES, "enabled": {"flag": "on"}}, {"r-1": record("r-1")},
     [("canary", 0, 0, 1), ("early", 0, 0, 2), ("rest", 1, 0, 2)]),
    # a version the model lacks: no site can be served, each counts as failing
    ({"version": "9.9.9", "rollout": WAVES}, {}, [("canary", 0, 1, 1), ("early", 0, 2, 2), ("rest", 0, 3, 3)]),
    # no rollout: one group
    ({"version": "1.1.0", "targets": {"matchLabels": {"ring": "early"}}}, {"e-1": record("e-1")},
     [(NO_WAVE, 1, 0, 2)]),
])
def test_rollout_progress_counts_healthy_sites_per_wave(spec, records, expected) -> None:
    fleet = fleet_repo(SITES_BY_RING, [model()], [deployment("d", **spec)], flags=FLAGS)
    progress = rollout_progress(fleet, records, NOW)
    assert [(p.wave, p.healthy, p.failing, p.total) for p in progress] == expected
    assert all(p.deployment == "d" for p in progress)


# --- the page -----------------------------------------------------------------------------------

class Page(HTMLParser):
    """Every tag with its attributes, and the text."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(self.text)


def assert_self_contained(html: str) -> Page:
    page = Page(html)
    for tag, attrs in page.tags:
        assert tag not in ("link", "img", "iframe", "object", "embed", "base", "form"), tag
        for name in ("src", "srcset", "action", "data", "poster", "xlink:href"):
            assert name not in attrs, (tag, name)
        assert (attrs.get("href") or "#").startswith("#"), (tag, attrs)
        assert not any("://" in (value or "") for value in attrs.values()), (tag, attrs)
    assert "url(" not in html and "@import" not in html
    policy = next(attrs["content"] for tag, attrs in page.tags if attrs.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in policy
    return page


def test_the_report_shows_sites_versions_authors_and_signatures(page: Path, history: ScriptedHistory) -> None:
    html = page.read_text()
    parsed = assert_self_contained(html)
    text = parsed.all_text
    for name in SITES:
        assert name in text
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        assert version in text
    assert "Carol Release <carol@example.com>" in text and "version 1.0.0 -> 1.1.0" in text
    if history.signed:
        assert f"good ({CAROL.email})" in " ".join(text.split())
    rows = {attrs.get("data-site") for tag, attrs in parsed.tags if tag == "tr" and attrs.get("data-site")}
    assert rows == set(SITES)
    stale = [attrs.get("data-site") for tag, attrs in parsed.tags if tag == "tr" and attrs.get("class") == "stale"]
    # ten minutes after the last records: the sites of the rolled-back waves wrote then, the rest
    # wrote hours earlier, and one never did
    assert stale == SITES[6:] and SILENT_SITE in stale
    bands = [attrs for tag, attrs in parsed.tags if tag == "rect"]
    assert any("failure" in attrs["class"] for attrs in bands)
    assert len([tag for tag, _ in parsed.tags if tag == "svg"]) == 2  # one chart per deployment


def test_text_from_the_repository_is_escaped() -> None:
    evil = "<script>alert('x')</script> & \"quoted\""
    commit = FleetCommit("a" * 40, f"{evil} <e@x>", NOW, "c <c@x>", NOW, evil)
    change = DeploymentChange("d", commit, "m", "1.0.0", "1.1.0", ("version",), Signature("bad", evil, evil))
    interval = Interval("s-1", "d", NOW - timedelta(hours=1), None, "1.0.0", "1.1.0", "failure", None, None, "b" * 40)
    data = ReportData(evil, "main", "c" * 40, NOW, build_matrix({}, ["s-1"], NOW, timedelta(minutes=10)), [],
                      [interval], FleetTrail([change], [], None))
    html = render_html(data)
    parsed = assert_self_contained(html)
    assert [tag for tag, _ in parsed.tags].count("script") == 1  # the page's own
    assert evil in parsed.all_text
    assert "<script>alert" not in html


def test_an_empty_fleet_still_renders() -> None:
    data = ReportData("repo", "main", "c" * 40, NOW, build_matrix({}, [], NOW, timedelta(minutes=10)), [], [],
                      FleetTrail([], [], None))
    text = assert_self_contained(render_html(data)).all_text
    assert "No site has written a status record yet." in text and "No deployment changes." in text


@pytest.mark.skipif(CHROMIUM is None, reason="no headless browser: install Debian package chromium")
def test_the_page_renders_in_a_browser_with_no_network_and_no_console_errors(page: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--dump-dom",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []  # the page logs nothing: any line is an error or a blocked load
    dom = Page(done.stdout)
    for name in SITES:
        assert name in dom.all_text
    assert "1.1.0" in dom.all_text and "Roll back scorer to 1.0.0" in dom.all_text
    assert len([tag for tag, _ in dom.tags if tag == "rect"]) > len(SITES)


# --- the command --------------------------------------------------------------------------------



def test_report_command_writes_index_html(history: ScriptedHistory, tmp_path: Path, capsys) -> None:
    code, out = run_command(capsys, "report", "--html", str(tmp_path / "out"), "--repo", str(history.bare))
    assert code == 0 and out.strip() == f"wrote {tmp_path / 'out' / 'index.html'}"
    assert "site-05" in assert_self_contained((tmp_path / "out" / "index.html").read_text()).all_text


@pytest.mark.parametrize(("argv", "message"), [
    (["--branch", "nope"], "has no branch 'nope'"),
    (["--gpg-keyring", "/nonexistent/keys.asc"], "cannot read gpg keyring"),
])
def test_report_refuses_what_it_cannot_read(history: ScriptedHistory, tmp_path: Path, capsys, argv,
                                            message) -> None:
    code, out = run_command(capsys, "report", "--html", str(tmp_path / "out"), "--repo", str(history.bare), *argv)
    assert code == 2 and message in out
    assert not (tmp_path / "out").exists()
