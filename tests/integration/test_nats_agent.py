"""Real site agents (`reconciler run`) on the NATS channel: they read the fleet repo and write
nothing to it (no status ref appears), poll Git only every ten minutes, and still move at once on
`reconciler notify`; the nats-server restarts under them, and they reconnect, are woken by the next
notification and converge. A dry run reads the gates' summaries from NATS too."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from reconciler.devtools.natsserver import NatsServer
from reconciler.devtools.processes import stop_all
from reconciler.devtools.testing import EXAMPLE, git
from reconciler.errors import Transient
from reconciler.settings import NatsSettings
from reconciler.status.nats_channel import NatsChannel

SITES = ("store-berlin-01", "store-boston-01")
TIMEOUT = 90


@pytest.fixture
def nats(tmp_path):
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def agents(fleet, nats, tmp_path):
    running = []
    for site in SITES:
        config = tmp_path / f"{site}.yaml"
        config.write_text(yaml.safe_dump({
            "site": site, "repo": fleet.url, "state": str(tmp_path / site), "interval": "10m",
            "trustKeys": [str(EXAMPLE / "keys" / "demo.pub")],
            "nats": {"servers": [nats.url], "timeout": 2, "audit": "off"}}))
        log = (tmp_path / f"{site}.log").open("wb")
        running.append((subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--config", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT), log))
    yield
    stop_all(process for process, _ in running)
    for _, log in running:
        log.close()


def notify(nats: NatsServer, commit: str) -> None:
    subprocess.run([sys.executable, "-m", "reconciler", "notify", "--commit", commit, "--server", nats.url],
                   check=True, capture_output=True, timeout=60)


def await_versions(observer: NatsChannel, head: str, version: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    records = {}
    while time.monotonic() < deadline:
        try:
            records = observer.records()
        except Transient:
            records = {}
        done = [s for s, r in records.items() if r.observedCommit == head and r.state == "success"
                and r.deployments["demand-forecast"].activeVersion == version]
        if sorted(done) == sorted(SITES):
            return
        time.sleep(0.2)
    raise AssertionError(f"sites did not reach {version} at {head[:12]}: {records}")


def test_read_only_sites_are_woken_by_notify_and_survive_a_server_restart(fleet, nats, agents):
    observer = NatsChannel(NatsSettings(servers=[nats.url], timeout=2))
    try:
        await_versions(observer, git("rev-parse", "HEAD", cwd=fleet.clone).strip(), "1.0.0")

        fleet.bump("deployments/demand-forecast.yaml", "1.0.0", "1.1.0")
        bumped = fleet.push("demand-forecast 1.1.0")
        notify(nats, bumped)  # the sites' next Git poll is ten minutes away: only the notification moves them
        await_versions(observer, bumped, "1.1.0")

        nats.stop()
        nats.start()  # same port and store: the agents reconnect on their own
        fleet.bump("deployments/demand-forecast.yaml", "1.1.0", "1.0.0")
        back = fleet.push("demand-forecast back to 1.0.0")
        notify(nats, back)
        await_versions(observer, back, "1.0.0")
    finally:
        observer.close()
    assert git("for-each-ref", "refs/reconciler", cwd=fleet.bare) == ""  # the sites wrote nothing to the fleet repo


def test_a_dry_run_reads_the_gates_summaries_from_nats(tmp_path, nats, capsys):
    from reconciler.cli.main import main
    from reconciler.devtools.testing import start_fleet_remote

    fleet = start_fleet_remote(tmp_path / "progressive", progressive=True)  # rollouts: the gates read summaries
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({"site": "store-boston-01", "repo": fleet.url, "state": str(tmp_path / "state"),
                                      "nats": {"servers": [nats.url], "timeout": 1}}))
    try:
        assert main(["run", "--once", "--dry-run", "--config", str(config)]) == 2  # no site summarised yet
        assert "SummaryBucketEmpty" in capsys.readouterr().err
        nats.stop()
        assert main(["run", "--once", "--dry-run", "--config", str(config)]) == 1  # from NATS, not from Git
        assert "StatusChannelUnreachable" in capsys.readouterr().err
    finally:
        fleet.server.stop()
