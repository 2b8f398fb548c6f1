"""Sites that gate on shard summaries (site.yaml ``summaryRepo``): each site reports to a status
repository of its own, so no site can read another's record, and the waves of the example fleet's
defect-detector rollout still open in order, from the summaries alone; the summary repository's
roll-up holds one entry per site, and the sites' own status repositories hold their own refs only
(the status ref and the entry ref)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from reconciler.agent.loop import Agent, utcnow
from reconciler.agent.wiring import build_agent
from reconciler.delivery.plan import wave_members
from reconciler.devtools.testing import EXAMPLE, copy_example, git, serve_fleet
from reconciler.manifests.loader import load_directory
from reconciler.settings import SiteConfig
from reconciler.status.summary_refs import entry_ref, rollup_file, rollup_ref

DEPLOYMENT = "defect-detector"
BAKE = timedelta(minutes=6)  # the Fleet's defaultRollout bakes 5m


@pytest.fixture
def fleet(tmp_path: Path):
    """The example fleet with its waves, its factories free to move at any time."""
    source = copy_example(tmp_path / "example")
    for path in (source / "sites").glob("factory-*.yaml"):
        site = yaml.safe_load(path.read_text())
        site["spec"].pop("maintenanceWindows", None)
        path.write_text(yaml.safe_dump(site))
    remote = serve_fleet(tmp_path, source)
    yield remote
    remote.server.stop()


def bare(path: Path) -> Path:
    git("init", "-q", "--bare", str(path), cwd=path.parent)
    return path


def make_agent(fleet, tmp_path: Path, site: str, summaries: Path | None) -> Agent:
    config = SiteConfig(site=site, repo=fleet.url, state=tmp_path / site / "state", interval="1s",
                        trust_keys=[EXAMPLE / "keys" / "demo.pub"],
                        status_repo=str(bare(tmp_path / f"{site}-status.git")),
                        summary_repo=str(summaries) if summaries else None, fetch_spread="0s")
    agent = build_agent(config, None)
    agent.start()
    return agent


def waves(now) -> list[list[str]]:
    repo = load_directory(EXAMPLE).repo
    members = wave_members(repo, repo.deployments[DEPLOYMENT], now)
    return [sorted(members[w.name]) for w in repo.fleet.spec.defaultRollout.waves if w.name in members]


def run_rounds(agents: dict[str, Agent], rounds: int) -> list[set[str]]:
    """Each round every site reconciles once at a time BAKE later; the sites that serve the
    deployment after each round."""
    serving, now = [], utcnow()
    for _ in range(rounds):
        for agent in agents.values():
            agent.reconcile_once(now=now)
        serving.append({site for site, agent in agents.items() if (record := agent.last_record) is not None and
                        (status := record.deployments.get(DEPLOYMENT)) is not None and status.activeVersion})
        now += BAKE
    return serving


def run_fleet(fleet, tmp_path: Path, order: list, summaries: Path | None) -> tuple[dict, list]:
    """An agent per site of every wave, run for a round per wave and one more; the agents and which
    sites served the new version after each round."""
    agents = {site: make_agent(fleet, tmp_path, site, summaries) for wave in reversed(order) for site in wave}
    try:
        return agents, run_rounds(agents, len(order) + 1)
    finally:
        for agent in agents.values():
            agent.stop()


def test_waves_open_in_order_from_the_summaries_alone(fleet, tmp_path):
    summaries = bare(tmp_path / "summaries.git")
    order = waves(utcnow())
    assert len(order) >= 2  # the example fleet's factories fall into more than one wave
    agents, serving = run_fleet(fleet, tmp_path, order, summaries)
    opened = [set().union(*order[:k + 1]) for k in range(len(order))]
    assert serving[:len(order)] == opened  # one more wave each bake, never sooner
    assert serving[-1] == set(agents)
    for shard, wave in enumerate(order):  # each wave's sites in a shard of their own
        stored = json.loads(git("show", f"{rollup_ref(DEPLOYMENT)}:{rollup_file(shard)}", cwd=summaries))
        assert set(stored["sites"]) == set(wave)
    for site in agents:
        refs = git("for-each-ref", "--format=%(refname)", cwd=tmp_path / f"{site}-status.git").split()
        assert refs == [entry_ref(DEPLOYMENT, site), f"refs/reconciler/status/{site}"]


def test_without_summaries_a_site_that_sees_no_record_never_leaves_its_wave(fleet, tmp_path):
    """The control: the same sites, each reading only its own status repository, wait for ever."""
    order = waves(utcnow())
    _, serving = run_fleet(fleet, tmp_path, order, None)
    assert serving[-1] == set(order[0])
