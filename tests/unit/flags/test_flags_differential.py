"""Our evaluator against flagd's own Python in-process evaluator (openfeature-provider-flagd, reading a
flag file offline), on the same flag file and the same contexts.

Left out on purpose, because there we follow flagd's Go evaluator and the flagd-testbed suite where
the Python provider lags behind them:
- custom-operation errors inside an ``if`` (testbed @operator-errors): flagd falls back to the default
  variant, the Python provider takes the ``false`` branch;
- ``sem_ver`` on ``1.2-alpha``-style shorthands, which Go's x/mod/semver refuses and the provider pads;
- a ``fractional`` whose bucketing expression comes out null while a targetingKey is present;
- a boolean flag read as a float, which the provider hands out as 1.0 and the testbed calls a
  TYPE_MISMATCH.
Our reason SPLIT is the provider's TARGETING_MATCH: flagd does not report fractional splits.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.flags import FlagFile, FlagSet, Reason, evaluate

api = pytest.importorskip("openfeature.api")
flagd = pytest.importorskip("openfeature.contrib.provider.flagd")
from openfeature.contrib.provider.flagd.config import ResolverType  # noqa: E402
from openfeature.evaluation_context import EvaluationContext  # noqa: E402

SUITS = {suit: suit for suit in ("clubs", "diamonds", "hearts", "spades")}

FLAG_FILE: dict[str, Any] = {
    "flags": {
        "static-bool": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        "static-int": {"state": "ENABLED", "variants": {"one": 1, "ten": 10}, "defaultVariant": "ten"},
        "static-float": {
            "state": "ENABLED",
            "variants": {"half": 0.5, "tenth": 0.1},
            "defaultVariant": "half",
        },
        "static-object": {
            "state": "ENABLED",
            "variants": {"small": {"batch": 1}, "large": {"batch": 64, "tags": ["a", "b"]}},
            "defaultVariant": "large",
        },
        "disabled": {"state": "DISABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        "no-default": {"state": "ENABLED", "variants": {"on": True, "off": False}},
        "no-default-targeted": {
            "state": "ENABLED",
            "variants": {"normal": "CFO", "special": "CEO"},
            "targeting": {"if": [{"==": ["jobs@orange.com", {"var": ["email"]}]}, "special", None]},
        },
        "region-tier": {
            "state": "ENABLED",
            "variants": {"eu-gold": "eu-gold", "eu": "eu", "other": "other"},
            "defaultVariant": "other",
            "targeting": {
                "if": [
                    {
                        "and": [
                            {"in": [{"var": "labels.region"}, ["eu-west", "eu-north"]]},
                            {"==": [{"var": "labels.tier"}, "gold"]},
                        ]
                    },
                    "eu-gold",
                    {"starts_with": [{"var": "labels.region"}, "eu-"]},
                    "eu",
                    None,
                ]
            },
        },
        "numbers": {
            "state": "ENABLED",
            "variants": {"low": "low", "mid": "mid", "high": "high"},
            "defaultVariant": "low",
            "targeting": {
                "if": [
                    {"<": [10, {"var": "gpus"}, 100]},
                    "mid",
                    {">=": [{"var": "gpus"}, 100]},
                    "high",
                    "low",
                ]
            },
        },
        "email-domain": {
            "state": "ENABLED",
            "variants": {"true": True, "false": False},
            "defaultVariant": "false",
            "targeting": {"ends_with": [{"var": "email"}, "@example.com"]},
        },
        "version-gate": {
            "state": "ENABLED",
            "variants": {"new": "new", "minor": "minor", "major": "major", "old": "old"},
            "defaultVariant": "old",
            "targeting": {
                "if": [
                    {"sem_ver": [{"var": "version"}, ">=", "2.1.0"]},
                    "new",
                    {"sem_ver": [{"var": "version"}, "~", "2.0.0"]},
                    "minor",
                    {"sem_ver": [{"var": "version"}, "^", "2.0.0"]},
                    "major",
                    "old",
                ]
            },
        },
        "fractional-by-key": {
            "state": "ENABLED",
            "variants": SUITS,
            "defaultVariant": "clubs",
            "targeting": {"fractional": [["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]},
        },
        "fractional-uneven": {
            "state": "ENABLED",
            "variants": SUITS,
            "defaultVariant": "clubs",
            "targeting": {
                "fractional": [
                    {"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]},
                    ["clubs", 1],
                    ["diamonds"],
                    ["hearts", 2],
                    ["spades", 1],
                ]
            },
        },
        "fractional-nested": {
            "state": "ENABLED",
            "variants": {"premium": "premium", "standard": "standard", "off": "off"},
            "defaultVariant": "off",
            "targeting": {
                "if": [
                    {"starts_with": [{"var": "targetingKey"}, "store-"]},
                    {
                        "fractional": [
                            {"var": "targetingKey"},
                            [{"if": [{"==": [{"var": "labels.tier"}, "gold"]}, "premium", "standard"]}, 50],
                            ["standard", {"if": [{"==": [{"var": "labels.tier"}, "gold"]}, 0, 50]}],
                        ]
                    },
                    "off",
                ]
            },
        },
        "shared-rule": {
            "state": "ENABLED",
            "variants": {"yes": "yes", "no": "no"},
            "defaultVariant": "no",
            "targeting": {"if": [{"$ref": "is_gold"}, "yes", "no"]},
        },
        "own-key": {
            "state": "ENABLED",
            "variants": {"own-key": "mine", "x": "other"},
            "defaultVariant": "x",
            "targeting": {"var": "$flagd.flagKey"},
        },
        "not-a-variant": {
            "state": "ENABLED",
            "variants": {"one": 1, "two": 2},
            "defaultVariant": "two",
            "targeting": {"if": [True, "three", "one"]},
        },
    },
    "$evaluators": {"is_gold": {"==": [{"var": "labels.tier"}, "gold"]}},
}

CONTEXTS: list[dict[str, Any]] = [
    {
        "targetingKey": "store-0001",
        "labels": {"region": "eu-west", "tier": "gold"},
        "gpus": 50,
        "email": "ada@example.com",
        "version": "2.1.0",
    },
    {
        "targetingKey": "store-0002",
        "labels": {"region": "eu-south", "tier": "silver"},
        "gpus": 100,
        "email": "bob@example.org",
        "version": "2.0.7",
    },
    {
        "targetingKey": "factory-7",
        "labels": {"region": "us-east", "tier": "gold"},
        "gpus": 10,
        "email": "cy@example.com",
        "version": "v2.3.0-rc.1",
    },
    {
        "targetingKey": "store-0042",
        "labels": {"region": "ap", "tier": "gold"},
        "gpus": "150",
        "email": "jobs@orange.com",
        "version": "1.9.9",
    },
    {"targetingKey": "jon@company.com", "labels": {}, "gpus": None, "email": "x", "version": "2.0.0-beta.2"},
] + [
    {
        "targetingKey": f"store-{n:04d}",
        "labels": {"tier": "gold" if n % 3 else "bronze"},
        "email": f"user{n}@example.com",
        "version": f"2.{n % 3}.{n % 5}",
    }
    for n in range(100, 140)
]

TYPES = {
    "static-bool": bool,
    "static-int": int,
    "static-float": float,
    "static-object": dict,
    "disabled": bool,
    "no-default": bool,
    "email-domain": bool,
    "not-a-variant": int,
}
METHODS = {
    bool: "get_boolean_details",
    str: "get_string_details",
    int: "get_integer_details",
    float: "get_float_details",
    dict: "get_object_details",
}
DEFAULTS = {bool: False, str: "code-default", int: -1, float: -1.5, dict: {"code": "default"}}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path: Path = tmp_path_factory.mktemp("flagd") / "fleet.flagd.json"
    path.write_text(json.dumps(FLAG_FILE))
    provider = flagd.FlagdProvider(
        resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=50
    )
    api.set_provider_and_wait(provider, "reconciler-differential")
    yield api.get_client("reconciler-differential")
    provider.shutdown()
    for thread in threading.enumerate():  # the provider's file watcher wakes up and exits
        if thread.name == "FlagdFileWatcherWorkerThread":
            thread.join(timeout=5)
    api.clear_providers()


@pytest.fixture(scope="module")
def ours() -> FlagSet:
    document = FlagFile.model_validate(FLAG_FILE)
    return FlagSet(flags=dict(document.flags), evaluators=dict(document.evaluators))


@pytest.mark.parametrize("key", sorted(FLAG_FILE["flags"]))
def test_same_resolution_as_flagds_python_provider(key: str, client: Any, ours: FlagSet) -> None:
    expected_type = TYPES.get(key, str)
    default = DEFAULTS[expected_type]
    for context in CONTEXTS:
        attributes = {name: value for name, value in context.items() if name != "targetingKey"}
        theirs = getattr(client, METHODS[expected_type])(
            key, default, EvaluationContext(targeting_key=context.get("targetingKey"), attributes=attributes)
        )
        mine = evaluate(ours, key, context, datetime.now(UTC), expected_type=expected_type, default=default)
        reason = Reason.TARGETING_MATCH if mine.reason == Reason.SPLIT else mine.reason
        assert (mine.value, mine.variant, reason) == (theirs.value, theirs.variant, theirs.reason), context
        assert mine.error_code == (theirs.error_code.value if theirs.error_code else None), context


def test_fractional_flags_really_split(ours: FlagSet) -> None:
    """The comparison above is only worth something if the contexts reach every bucket."""
    for key in ("fractional-by-key", "fractional-uneven"):
        variants = {evaluate(ours, key, context, datetime.now(UTC)).variant for context in CONTEXTS}
        assert variants == set(SUITS), key


@pytest.mark.parametrize(
    ("key", "expected_type"),
    [
        ("static-bool", str),
        ("static-bool", int),
        ("static-int", bool),
        ("static-float", int),
        ("static-object", str),
        ("missing", bool),
    ],
)
def test_same_errors_as_flagds_python_provider(
    key: str, expected_type: type, client: Any, ours: FlagSet
) -> None:
    default = DEFAULTS[expected_type]
    context = CONTEXTS[0]
    attributes = {name: value for name, value in context.items() if name != "targetingKey"}
    theirs = getattr(client, METHODS[expected_type])(
        key, default, EvaluationContext(targeting_key=context["targetingKey"], attributes=attributes)
    )
    mine = evaluate(ours, key, context, datetime.now(UTC), expected_type=expected_type, default=default)
    assert (mine.value, mine.reason, mine.error_code) == (
        theirs.value,
        theirs.reason,
        theirs.error_code.value,
    )
