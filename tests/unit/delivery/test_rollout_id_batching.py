"""How a deployment's requests are batched (maxBatchSize, maxQueueDelay) is applied by the runtime
at once: changing it starts no new rollout, and specs written before the fields existed keep
their rollout ids."""

from __future__ import annotations

import pytest

from reconciler.delivery.plan import _rollout_of_version
from reconciler.manifests.deployments import DeploymentSpec

BASE = {"model": "m", "version": "1.0.0"}


@pytest.mark.parametrize(
    "changes, same",
    [
        ({"maxBatchSize": 8}, True),
        ({"maxBatchSize": 32, "maxQueueDelay": "2ms"}, True),
        ({"rollbackWindow": "1h"}, False),
        ({"enabled": False}, False),
    ],
)
def test_only_serving_settings_keep_the_rollout(changes: dict, same: bool):
    before = _rollout_of_version(DeploymentSpec.model_validate(BASE), "1.0.0")
    after = _rollout_of_version(DeploymentSpec.model_validate({**BASE, **changes}), "1.0.0")
    assert (before == after) is same
