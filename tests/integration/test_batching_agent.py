"""A Deployment's maxBatchSize / maxQueueDelay reach the site's runtime through the agent, at once
and without a new rollout."""

from __future__ import annotations

from reconciler.agent.config import SiteConfig
from reconciler.agent.wiring import build_agent
from reconciler.devtools.testing import EXAMPLE
from reconciler.runtime.registry import BatchPolicy, ModelRegistry

SITE = "store-boston-01"


def test_batching_settings_apply_without_a_rollout(fleet, tmp_path):
    registry = ModelRegistry()
    config = SiteConfig(site=SITE, repo=fleet.url, state=tmp_path / "state", interval="1s",
                        trustKeys=[EXAMPLE / "keys" / "demo.pub"])
    agent = build_agent(config, registry)
    agent.start()
    try:
        agent.reconcile_once()
        assert registry.batching("demand-forecast") is None

        fleet.edit("deployments/demand-forecast.yaml", r"^  model: demand-forecast$",
                   "  model: demand-forecast\n  maxBatchSize: 8\n  maxQueueDelay: 2ms")
        fleet.push("batch demand-forecast")
        batched = agent.reconcile_once()
        assert registry.batching("demand-forecast") == BatchPolicy(max_batch_size=8, max_queue_delay=0.002)
        assert batched.plan.actions == ()
        assert registry.get("demand-forecast").version == "1.0.0"

        fleet.edit("deployments/demand-forecast.yaml", r"^  maxBatchSize: 8\n  maxQueueDelay: 2ms\n", "")
        fleet.push("stop batching")
        agent.reconcile_once()
        assert registry.batching("demand-forecast") is None
    finally:
        agent.stop()
