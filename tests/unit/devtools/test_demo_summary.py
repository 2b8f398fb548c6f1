"""The demo's last line claims waves and canaries only where the deployment has them."""

from __future__ import annotations

import pytest
from fleetfactory import deployment, fleet_repo, model, site

from reconciler.devtools.demo import _rolled_out

WAVES = {"rollout": {"waves": [{"name": "all", "percent": 100}]}}
CANARY = {"canary": {"steps": [{"setWeight": 20}]}}


@pytest.mark.parametrize("spec,moved,expected", [
    ({}, 0, "none of them moved d to 1.1.0"),
    ({}, 2, "2 of them rolled d 1.0.0 -> 1.1.0 out"),
    (WAVES, 2, "2 of them rolled d 1.0.0 -> 1.1.0 out in waves"),
    (CANARY, 1, "1 of them rolled d 1.0.0 -> 1.1.0 out with in-site canaries"),
    (WAVES | CANARY, 3, "3 of them rolled d 1.0.0 -> 1.1.0 out in waves with in-site canaries"),
])
def test_the_summary_says_what_the_bump_did(spec, moved, expected):
    repo = fleet_repo([site("s1")], [model()], [deployment(**spec)])
    assert _rolled_out(repo, "d", "1.0.0", "1.1.0", moved) == expected
