"""`reconciler shards`: the summary shards an operator lays status repositories out by, as the
agents number them (``gated_shards``), for the example fleet."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from reconciler.cli.main import main
from reconciler.delivery.summary import deployment_shards, gated_shards
from reconciler.devtools.testing import EXAMPLE
from reconciler.manifests.loader import load_directory


def test_each_shard_holds_the_sites_the_agents_put_there() -> None:
    repo, now = load_directory(EXAMPLE).repo, datetime.now(UTC)
    for name in repo.deployments:
        for shard in deployment_shards(repo, name, now):
            for site in shard.sites:
                assert gated_shards(repo, site, now)[name] == shard.number
    assert [(s.number, s.wave) for s in deployment_shards(repo, "demand-forecast", now)] == [
        (0, "pilot"), (1, "early"), (2, "all")]


def test_the_json_layout_lists_every_gated_deployment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shards", "--repo", str(EXAMPLE), "--format", "json"]) == 0
    layout = json.loads(capsys.readouterr().out)
    assert set(layout) == {"defect-detector", "defect-detector-cpu", "demand-forecast", "fraud-score"}
    assert layout["demand-forecast"][0] == {"shard": 0, "wave": "pilot", "sites": ["store-berlin-01", "store-mumbai-01"]}


def test_the_text_names_shard_wave_and_sites(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shards", "--repo", str(EXAMPLE), "--deployment", "fraud-score"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "fraud-score:", "  shard 0000  wave early  1 site: store-vienna-01",
        "  shard 0001  wave all  2 sites: store-berlin-01, store-munich-01"]


def test_an_unknown_deployment_is_refused_with_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shards", "--repo", str(EXAMPLE), "--deployment", "nope"]) == 2
    said = capsys.readouterr()
    assert "no deployment 'nope'" in said.err and "fraud-score" in said.err and said.out == ""
