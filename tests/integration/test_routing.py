"""Progressive delivery inside the runtime: stable and canary loaded together, each request routed
(pinned, flag, sticky key, weight), stable's traffic mirrored to the canary, and the per-version
windows the canary analysis judges. Pure rules table-driven; the rest on real onnxruntime sessions
behind a real server on loopback."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from runtime_models import (
    INFER,
    INTERFACE,
    LAYERS,
    VERSIONS,
    Load,
    infer_body,
    registry_with,
    serve,
    write_models,
)

from reconciler.devtools.onnx_builder import dense_reference
from reconciler.errors import ReconcilerError
from reconciler.flags import FlagFile, FlagSet, bucket, site_context
from reconciler.runtime.metrics import LATENCY_BUCKETS, VersionStats, WindowStats, window_stats
from reconciler.runtime.registry import Loaded, ModelRegistry, NotServed, Served
from reconciler.runtime.routing import Router, ShadowRunner, agrees, choose
from reconciler.runtime.server import build_app

SITE = "store-1"
# 1.0.1 is 1.0.0's weights under a new version: a rebuild that must agree with it everywhere.
WEIGHTS = {**LAYERS, "1.0.1": LAYERS["1.0.0"]}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_models(tmp_path_factory.mktemp("models"), WEIGHTS)


def _canary(registry: ModelRegistry, files: dict[str, Path], version: str, **settings: object) -> None:
    registry.start_canary("iris", "iris", version, files[version], INTERFACE, digest=None, **settings)


# --- the routing rules, pure ----------------------------------------------------------------------


def _served(version: str) -> Served:
    return Served("iris", "iris", version, None, INTERFACE, f"sha256:{version}", Path(version))  # type: ignore[arg-type]


STABLE, CANARY, PREVIOUS = _served("1.0.0"), _served("2.0.0"), _served("0.9.0")


def _loaded(weight: int, canary: bool = True) -> Loaded:
    return Loaded(active=STABLE, previous=PREVIOUS, canary=CANARY if canary else None, weight=weight)


def _no_draw() -> float:
    raise AssertionError("this request must not be routed at random")


KEY = "caller-7"
KEY_BUCKET = bucket("iris" + KEY, 100)  # 78

CHOICES = [
    ("pinned stable beats weight 100", _loaded(100), {"pinned": "1.0.0"}, "1.0.0"),
    ("pinned canary at weight 0", _loaded(0), {"pinned": "2.0.0"}, "2.0.0"),
    ("pinned previous", _loaded(50), {"pinned": "0.9.0"}, "0.9.0"),
    ("pinned beats the flag", _loaded(0), {"pinned": "1.0.0", "flagged": "2.0.0"}, "1.0.0"),
    ("flag picks the canary at weight 0", _loaded(0), {"flagged": "2.0.0"}, "2.0.0"),
    ("flag picks the previous version", _loaded(50), {"flagged": "0.9.0"}, "0.9.0"),
    ("flag beats the key", _loaded(100), {"flagged": "1.0.0", "key": KEY}, "1.0.0"),
    ("flag naming no loaded version falls through", _loaded(100), {"flagged": "7.0.0", "draw": 0.99}, "2.0.0"),
    ("no canary: stable", _loaded(0, canary=False), {"key": KEY}, "1.0.0"),
    ("weight 0: stable", _loaded(0), {"key": KEY}, "1.0.0"),
    ("weight 100: canary even at the top draw", _loaded(100), {"draw": 0.9999}, "2.0.0"),
    ("draw below the weight: canary", _loaded(30), {"draw": 0.2999}, "2.0.0"),
    ("draw at the weight: stable", _loaded(30), {"draw": 0.30}, "1.0.0"),
    ("key's bucket below the weight: canary", _loaded(KEY_BUCKET + 1), {"key": KEY}, "2.0.0"),
    ("key's bucket at the weight: stable", _loaded(KEY_BUCKET), {"key": KEY}, "1.0.0"),
]


@pytest.mark.parametrize("loaded, request_, expected", [c[1:] for c in CHOICES], ids=[c[0] for c in CHOICES])
def test_routing_rules(loaded: Loaded, request_: dict, expected: str):
    draw = request_.pop("draw", None)
    chosen = choose(
        "iris",
        loaded,
        pinned=request_.get("pinned"),
        key=request_.get("key"),
        flagged=request_.get("flagged"),
        draw=_no_draw if draw is None else lambda: draw,
    )
    assert chosen.version == expected


def test_a_pinned_version_that_is_not_loaded_is_not_served():
    with pytest.raises(NotServed, match="no version '5.0.0' loaded; loaded: 1.0.0, 2.0.0, 0.9.0"):
        choose("iris", _loaded(50), pinned="5.0.0", key=None, flagged=None, draw=_no_draw)


def test_the_same_key_lands_on_the_same_version_every_time():
    rng = random.Random(11)
    for key in (f"caller-{n}" for n in range(20)):
        versions = {
            choose("iris", _loaded(50), pinned=None, key=key, flagged=None, draw=rng.random).version
            for _ in range(1000)
        }
        assert len(versions) == 1, key


@pytest.mark.parametrize("weight, expected", [(0, {"1.0.0"}), (100, {"2.0.0"})])
def test_weights_0_and_100_are_absolute(weight: int, expected: set[str]):
    rng = random.Random(12)
    keyed = {choose("iris", _loaded(weight), pinned=None, key=f"k{n}", flagged=None, draw=rng.random).version for n in range(2000)}
    unkeyed = {choose("iris", _loaded(weight), pinned=None, key=None, flagged=None, draw=rng.random).version for _ in range(2000)}
    assert keyed == unkeyed == expected


def test_raising_the_weight_only_moves_keys_from_stable_to_canary():
    keys = [f"user-{n}" for n in range(5000)]

    def on_canary(weight: int) -> set[str]:
        loaded = _loaded(weight)
        return {k for k in keys if choose("iris", loaded, pinned=None, key=k, flagged=None, draw=_no_draw) is CANARY}

    at_20, at_50 = on_canary(20), on_canary(50)
    assert at_20 < at_50
    assert abs(len(at_20) / 5000 - 0.20) < 0.02 and abs(len(at_50) / 5000 - 0.50) < 0.02


def test_weighted_split_over_5000_requests(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0")
    _canary(registry, model_files, "2.0.0", weight=30)
    router = Router(registry, rng=random.Random(2024))

    served = Counter(router.route("iris").served.version for _ in range(5000))

    # 3 standard deviations of a binomial(5000, 0.3) share are 0.019.
    assert abs(served["2.0.0"] / 5000 - 0.30) < 0.02, served
    assert set(served) == {"1.0.0", "2.0.0"}


# --- routing by flag --------------------------------------------------------------------------------

ROUTING_FLAGS = FlagFile.model_validate(
    {
        "flags": {
            "iris-version": {
                "state": "ENABLED",
                "variants": {"v1": "1.0.0", "v2": "2.0.0", "v9": "9.0.0"},
                "defaultVariant": "v1",
                "targeting": {
                    "if": [
                        {"starts_with": [{"var": "targetingKey"}, "beta-"]},
                        "v2",
                        {"==": [{"var": "targetingKey"}, "ghost"]},
                        "v9",
                        {"and": [{"==": [{"var": "ring"}, "early"]}, {"==": [{"var": "targetingKey"}, SITE]}]},
                        "v2",
                        None,
                    ]
                },
            },
            "iris-off": {"state": "DISABLED", "variants": {"v2": "2.0.0"}, "defaultVariant": "v2"},
            "iris-number": {"state": "ENABLED", "variants": {"two": 2}, "defaultVariant": "two"},
        }
    }
)


@pytest.mark.parametrize(
    "flag, ring, weight, pinned, key, expected",
    [
        ("iris-version", "late", 0, None, "beta-7", "2.0.0"),  # the flag sends beta callers to the canary
        ("iris-version", "late", 100, None, "user-7", "1.0.0"),  # default variant v1 holds them on stable
        ("iris-version", "late", 100, None, "ghost", "2.0.0"),  # 9.0.0 is not loaded: the weight decides
        ("iris-version", "early", 0, None, None, "2.0.0"),  # no key: the site is the targeting key
        ("iris-version", "late", 0, None, None, "1.0.0"),
        ("iris-version", "late", 0, "1.0.0", "beta-7", "1.0.0"),  # a pinned version beats the flag
        ("iris-off", "late", 0, None, "beta-7", "1.0.0"),  # a disabled flag routes nothing
        ("iris-number", "late", 0, None, "beta-7", "1.0.0"),  # a value that is no version string
        ("no-such-flag", "late", 100, None, "beta-7", "2.0.0"),
        (None, "late", 0, None, "beta-7", "1.0.0"),  # no routing flag set
    ],
)
def test_a_routing_flag_picks_the_version(
    model_files: dict[str, Path], flag: str | None, ring: str, weight: int, pinned: str | None, key: str | None, expected: str
):
    registry = registry_with(model_files, "1.0.0")
    _canary(registry, model_files, "2.0.0", weight=weight)
    registry.set_flags(FlagSet(flags=dict(ROUTING_FLAGS.flags)), site_context(SITE, {"ring": ring}))
    registry.set_routing_flag("iris", flag)

    decision = Router(registry, rng=random.Random(3)).route("iris", pinned=pinned, key=key)

    assert decision.served.version == expected


def test_a_routing_flag_is_dropped_with_none(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0")
    _canary(registry, model_files, "2.0.0", weight=0)
    registry.set_flags(FlagSet(flags=dict(ROUTING_FLAGS.flags)), site_context(SITE, {}))
    registry.set_routing_flag("iris", "iris-version")
    router = Router(registry)
    assert router.route("iris", key="beta-1").served.version == "2.0.0"

    registry.set_routing_flag("iris", None)

    assert router.route("iris", key="beta-1").served.version == "1.0.0"


# --- the canary in the registry ---------------------------------------------------------------------


def _state(registry: ModelRegistry) -> tuple:
    loaded = registry.state()["iris"]
    canary = loaded.canary.version if loaded.canary else None
    previous = loaded.previous.version if loaded.previous else None
    return loaded.active.version, canary, previous, loaded.weight, loaded.mirror


def test_canary_lifecycle_start_weigh_mirror_promote(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0")

    _canary(registry, model_files, "2.0.0", weight=10)
    assert _state(registry) == ("1.0.0", "2.0.0", None, 10, False)
    session = registry.get("iris", "2.0.0").session
    assert registry.get("iris").version == "1.0.0"
    assert [s.version for s in registry.state()["iris"].versions()] == ["1.0.0", "2.0.0"]

    registry.set_weight("iris", 50)
    registry.set_mirror("iris", True)
    assert _state(registry) == ("1.0.0", "2.0.0", None, 50, True)

    _canary(registry, model_files, "2.0.0", weight=20)  # again: only the settings change
    assert _state(registry) == ("1.0.0", "2.0.0", None, 20, False)
    assert registry.get("iris", "2.0.0").session is session

    registry.promote("iris")
    assert _state(registry) == ("2.0.0", None, "1.0.0", 0, False)
    assert registry.get("iris").session is session


def test_abort_unloads_the_canary_and_can_be_repeated(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0", "2.0.0")
    _canary(registry, model_files, "3.0.0", weight=60, mirror=True)

    registry.abort_canary("iris")
    registry.abort_canary("iris")
    registry.abort_canary("not-loaded")

    assert _state(registry) == ("2.0.0", None, "1.0.0", 0, False)
    with pytest.raises(NotServed):
        registry.get("iris", "3.0.0")


def test_a_canary_of_the_previous_version_shares_its_session(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0", "2.0.0")
    previous = registry.get("iris", "1.0.0").session

    _canary(registry, model_files, "1.0.0", weight=5)

    assert registry.state()["iris"].canary.session is previous
    assert [s.version for s in registry.state()["iris"].versions()] == ["2.0.0", "1.0.0"]


def test_activate_ends_a_canary(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0")
    _canary(registry, model_files, "2.0.0", weight=40, mirror=True)

    registry.activate("iris", "iris", "3.0.0", model_files["3.0.0"], INTERFACE)

    assert _state(registry) == ("3.0.0", None, "1.0.0", 0, False)


CANARY_REFUSALS = [
    ("canary without an active version", None, lambda r, f: _canary(ModelRegistry(), f, "2.0.0"), "NoActiveVersion"),
    ("canary of the active version", None, lambda r, f: _canary(r, f, "1.0.0"), "CanaryIsActive"),
    ("weight without a canary", None, lambda r, f: r.set_weight("iris", 10), "NoCanary"),
    ("mirror without a canary", None, lambda r, f: r.set_mirror("iris", True), "NoCanary"),
    ("promote without a canary", None, lambda r, f: r.promote("iris"), "NoCanary"),
    ("weight of another deployment", "2.0.0", lambda r, f: r.set_weight("wine", 10), "NoActiveVersion"),
    *[
        (f"start at weight {weight!r}", None, lambda r, f, w=weight: _canary(r, f, "2.0.0", weight=w), "InvalidWeight")
        for weight in (-1, 101, 12.5, True, "50")
    ],
    *[
        (f"set weight {weight!r}", "2.0.0", lambda r, f, w=weight: r.set_weight("iris", w), "InvalidWeight")
        for weight in (-1, 101, 12.5, None)
    ],
    (
        "canary whose bytes are not the digest",
        None,
        lambda r, f: r.start_canary("iris", "iris", "2.0.0", f["2.0.0"], INTERFACE, digest="sha256:" + "0" * 64),
        "ArtifactDigestMismatch",
    ),
]


@pytest.mark.parametrize("canary, action, reason", [c[1:] for c in CANARY_REFUSALS], ids=[c[0] for c in CANARY_REFUSALS])
def test_canary_operations_refused_with_a_reason(model_files: dict[str, Path], canary: str | None, action, reason: str):
    registry = registry_with(model_files, "1.0.0")
    if canary is not None:
        _canary(registry, model_files, canary, weight=30)
    before = _state(registry)

    with pytest.raises(ReconcilerError) as raised:
        action(registry, model_files)

    assert raised.value.reason == reason
    assert _state(registry) == before


# --- routing over HTTP ----------------------------------------------------------------------------


def test_routing_keys_keep_callers_on_one_version_over_http(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0")
    _canary(registry, model_files, "2.0.0", weight=50)
    x = np.asarray([[0.5, -0.2, 0.1, 0.9]], dtype=np.float32)
    keys = [f"caller-{n}" for n in range(30)]
    by_header: dict[str, set[str]] = {key: set() for key in keys}
    by_parameter: dict[str, set[str]] = {key: set() for key in keys}

    with serve(build_app(registry, site=SITE)) as client:
        for key in keys:
            for _ in range(4):
                response = client.post(INFER, json=infer_body(x), headers={"x-routing-key": key})
                assert response.headers["x-model-version"] == response.json()["model_version"]
                by_header[key].add(response.json()["model_version"])
                response = client.post(INFER, json=infer_body(x, parameters={"routing_key": key}))
                by_parameter[key].add(response.json()["model_version"])
        header_wins = client.post(
            INFER, json=infer_body(x, parameters={"routing_key": "caller-9"}), headers={"x-routing-key": "caller-7"}
        )

    expected = {key: {"2.0.0" if bucket("iris" + key, 100) < 50 else "1.0.0"} for key in keys}
    assert by_header == by_parameter == expected
    assert {v for versions in expected.values() for v in versions} == {"1.0.0", "2.0.0"}
    assert header_wins.json()["model_version"] == "1.0.0"  # caller-7 is bucket 78, caller-9 bucket 19


def test_canary_cycles_under_load_fail_no_request(model_files: dict[str, Path]):
    """Four clients hammer /infer while a canary is started, weighed, mirrored, and promoted or
    aborted, 100 times over three versions: every request is answered, by the version it names."""
    registry = registry_with(model_files, "1.0.0")
    x = np.random.default_rng(9).normal(size=(3, 4)).astype(np.float32)
    expected = {version: dense_reference(LAYERS[version], x) for version in VERSIONS}
    app = build_app(registry, site=SITE)
    with serve(app) as client, Load(str(client.base_url), x, expected, keyed=True) as load:
        for cycle in range(100):
            stable = registry.get("iris").version
            candidate = [v for v in VERSIONS if v != stable][cycle % 2]
            _canary(registry, model_files, candidate, weight=25, mirror=cycle % 3 == 0)
            time.sleep(0.003)
            registry.set_weight("iris", 75)
            time.sleep(0.003)
            if cycle % 2:
                registry.promote("iris")
            else:
                registry.abort_canary("iris")

    served = load.served
    print(f"\n{dict(served)} requests served across 100 canary cycles")
    assert load.failures == []
    assert set(served) == set(VERSIONS)


# --- shadow traffic -------------------------------------------------------------------------------

P = np.asarray([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
VALUES = np.asarray([[1.0, -2.0, 3.5]], dtype=np.float32)

AGREEMENT = [
    ("identical", [P], [P.copy()], True),
    ("values within tolerance", [VALUES], [VALUES + 5e-5], True),
    ("values beyond tolerance", [VALUES], [VALUES + 1e-2], False),
    ("relative tolerance on large values", [np.asarray([[1000.0]])], [np.asarray([[1000.9]])], True),
    ("probabilities differ, classes agree", [P], [np.asarray([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])], True),
    ("one row changes class", [P], [np.asarray([[0.3, 0.6, 0.1], [0.1, 0.1, 0.8]])], False),
    ("logits are compared by value", [np.asarray([[2.0, 1.0, 0.5]])], [np.asarray([[3.0, 1.0, 0.5]])], False),
    ("only one side a distribution", [P], [P * 2], False),
    ("shapes differ", [P], [P[:1]], False),
    ("an output missing", [P, VALUES], [P], False),
    ("integer labels equal", [np.asarray([1, 2])], [np.asarray([1, 2])], True),
    ("integer labels differ", [np.asarray([1, 2])], [np.asarray([1, 0])], False),
    ("NaN where stable has NaN", [np.asarray([[np.nan, 1.0]])], [np.asarray([[np.nan, 1.0]])], True),
]


@pytest.mark.parametrize("stable, canary, agreed", [c[1:] for c in AGREEMENT], ids=[c[0] for c in AGREEMENT])
def test_agreement_between_stable_and_canary(stable: list, canary: list, agreed: bool):
    assert agrees(stable, canary) is agreed


def test_a_full_shadow_queue_drops_instead_of_waiting(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0")
    canary = registry.get("iris")
    x = np.asarray([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    stable_outputs = canary.session.run(["output"], {"input": x})
    results: list[bool] = []
    dropped: list[Served] = []
    runner = ShadowRunner(lambda served, agreed: results.append(agreed), dropped.append, capacity=4)

    # No worker yet, so nothing drains the queue: a submit that waited would hang this test.
    accepted = [runner.submit(canary, {"input": x}, ["output"], stable_outputs) for _ in range(10)]
    runner.start()
    runner.close()

    assert accepted == [True] * 4 + [False] * 6
    assert dropped == [canary] * 6
    assert results == [True] * 4  # the queued ones still ran once a worker came


def _mirror_window(app, client: httpx.Client, canary: str, requests: int, seed: int) -> tuple[WindowStats, Counter]:
    """Sends ``requests`` single-row requests and waits until the canary has answered them all."""
    metrics = app.state.metrics
    before = metrics.snapshot()
    rows = np.random.default_rng(seed).normal(scale=2.0, size=(requests, 1, 4)).astype(np.float32)
    served = Counter(client.post(INFER, json=infer_body(row)).json()["model_version"] for row in rows)
    deadline = time.monotonic() + 10
    while window_stats(before, metrics.snapshot(), "iris", canary).shadow_requests < served["1.0.0"]:
        assert time.monotonic() < deadline, "the shadow worker did not finish"
        time.sleep(0.01)
    return window_stats(before, metrics.snapshot(), "iris", canary), served


def test_mirrored_traffic_measures_agreement(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0")
    app = build_app(registry, site=SITE)
    with serve(app) as client:
        _canary(registry, model_files, "1.0.1", weight=0, mirror=True)
        same, served_same = _mirror_window(app, client, "1.0.1", 60, seed=1)
        _canary(registry, model_files, "2.0.0", weight=0, mirror=True)
        different, _ = _mirror_window(app, client, "2.0.0", 200, seed=2)
        registry.set_weight("iris", 100)  # requests the canary answers itself are not mirrored
        canary_only, served_canary = _mirror_window(app, client, "2.0.0", 20, seed=3)
        scrape = client.get("/metrics").text

    assert served_same == {"1.0.0": 60}
    assert (same.shadow_requests, same.agreement) == (60, 1.0)
    assert different.shadow_requests == 200 and 0 < different.agreement < 1
    assert served_canary == {"2.0.0": 20} and canary_only.shadow_requests == 0
    families = {family.name: family for family in text_string_to_metric_families(scrape)}
    shadow = {s.labels["version"]: s.value for s in families["reconciler_shadow_requests"].samples if s.name.endswith("_total")}
    assert shadow == {"1.0.1": 60, "2.0.0": 200}
    info = {(s.labels["version"], s.labels["state"]) for s in families["reconciler_model_info"].samples}
    assert info == {("1.0.0", "active"), ("2.0.0", "canary")}
    weights = {s.labels["version"]: s.value for s in families["reconciler_canary_weight_percent"].samples}
    assert weights == {"2.0.0": 100}


# --- analysis windows -----------------------------------------------------------------------------


def _histogram(**counts: int) -> tuple[tuple[float, int], ...]:
    """Cumulative buckets from per-bucket counts named by bound: b0_001=3 is 3 requests <= 1 ms."""
    per_bound = {float(name[1:].replace("_", ".")): count for name, count in counts.items() if name != "inf"}
    per_bound[math.inf] = counts.get("inf", 0)
    total, cumulative = 0, []
    for bound in (*LATENCY_BUCKETS, math.inf):
        total += per_bound.get(float(bound), 0)
        cumulative.append((float(bound), total))
    return tuple(cumulative)


def _stats(requests=0, errors=0, invalid=0, histogram=(), shadow=0, agreements=0) -> VersionStats:
    return VersionStats(requests, errors, invalid, histogram, shadow_requests=shadow, shadow_agreements=agreements)


K = ("iris", "2.0.0")
WINDOWS = [
    ("no traffic at all", {}, {}, WindowStats(0, 0, 0.0, None, 0, None)),
    (
        "first snapshot before any traffic",
        {},
        {K: _stats(100, 2, 0, _histogram(b0_001=90, b0_01=8))},
        WindowStats(100, 2, 0.02, 0.01, 0, None),
    ),
    (
        "only the window counts",
        {K: _stats(100, 50, 0, _histogram(b1=50))},
        {K: _stats(200, 51, 0, _histogram(b1=50, b0_001=99))},
        WindowStats(100, 1, 0.01, 0.001, 0, None),
    ),
    (
        "invalid requests are not the version's",
        {},
        {K: _stats(110, 1, 10, _histogram(b0_005=99))},
        WindowStats(100, 1, 0.01, 0.005, 0, None),
    ),
    ("p99 is the bucket of the 99th of 100", {}, {K: _stats(100, 0, 0, _histogram(b0_001=98, b0_5=1, b2_5=1))}, WindowStats(100, 0, 0.0, 0.5, 0, None)),
    ("p99 rounds the rank up", {}, {K: _stats(150, 0, 0, _histogram(b0_001=148, b0_1=2))}, WindowStats(150, 0, 0.0, 0.1, 0, None)),
    ("p99 beyond the last bucket", {}, {K: _stats(100, 0, 0, _histogram(b0_001=98, inf=2))}, WindowStats(100, 0, 0.0, math.inf, 0, None)),
    ("only failures: no latency", {}, {K: _stats(5, 5)}, WindowStats(5, 5, 1.0, None, 0, None)),
    (
        "agreement of the window's mirrored requests",
        {K: _stats(shadow=10, agreements=10)},
        {K: _stats(shadow=60, agreements=40)},
        WindowStats(0, 0, 0.0, None, 50, 0.6),
    ),
    (
        "other versions and deployments are left out",
        {},
        {("iris", "1.0.0"): _stats(7, 7), ("wine", "2.0.0"): _stats(9, 9), K: _stats(shadow=4, agreements=4)},
        WindowStats(0, 0, 0.0, None, 4, 1.0),
    ),
]


@pytest.mark.parametrize("before, after, expected", [c[1:] for c in WINDOWS], ids=[c[0] for c in WINDOWS])
def test_window_stats(before: dict, after: dict, expected: WindowStats):
    assert window_stats(before, after, *K) == expected
