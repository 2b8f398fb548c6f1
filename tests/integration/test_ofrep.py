"""OFREP on the runtime server: the real OpenFeature SDK with its OFREP provider reads the fleet's
flags from a real server on loopback, and raw HTTP checks pin the protocol's shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from reconciler.flags import FlagFile, FlagSet, site_context
from reconciler.runtime.ofrep import ofrep_routes
from reconciler.runtime.registry import ModelRegistry
from reconciler.runtime.server import RuntimeServer, build_app

SITE = "store-berlin-01"
OWNER = {"owner": "checkout@example.com"}
FLAGS: dict[str, Any] = {
    "dark-mode": {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {"if": [{"in": [{"var": "region"}, ["eu-central"]]}, "on", "off"]},
        "metadata": OWNER,
    },
    "greeting": {
        "state": "ENABLED",
        "variants": {"hello": "hello", "moin": "moin"},
        "defaultVariant": "hello",
        "targeting": {"if": [{"starts_with": [{"var": "targetingKey"}, "store-hamburg-"]}, "moin", None]},
    },
    "max-batch": {
        "state": "ENABLED",
        "variants": {"small": 8, "large": 64},
        "defaultVariant": "small",
        "targeting": {"if": [{"==": [{"var": "tier"}, "flagship"]}, "large", None]},
    },
    "ratio": {"state": "ENABLED", "variants": {"low": 0.25, "high": 0.75}, "defaultVariant": "low"},
    "limits": {
        "state": "ENABLED",
        "variants": {"tight": {"rps": 10, "burst": [1, 2]}, "loose": {"rps": 100}},
        "defaultVariant": "tight",
    },
    "launched": {
        "state": "ENABLED",
        "variants": {"yes": True, "no": False},
        "defaultVariant": "no",
        "targeting": {"if": [{">=": [{"var": "$flagd.timestamp"}, 1_900_000_000]}, "yes", "no"]},  # 2030-03-17
    },
    "retired": {"state": "DISABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
    "code-default": {"state": "ENABLED", "variants": {"on": True, "off": False}, "metadata": OWNER},
    "broken": {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {"no_such_operation": [1]},
    },
    "wrong-variant": {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {"if": [True, "maybe", "off"]},
    },
}
LABELS = {"region": "eu-central", "tier": "pilot"}
SINGLE = "/ofrep/v1/evaluate/flags/{}"
BULK = "/ofrep/v1/evaluate/flags"


def _flag_set(flags: dict[str, Any]) -> FlagSet:
    return FlagSet(flags=dict(FlagFile.model_validate({"flags": flags}).flags))


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    registry = ModelRegistry()
    registry.set_flags(_flag_set(FLAGS), site_context(SITE, LABELS))
    return registry


@pytest.fixture(scope="module")
def base_url(registry: ModelRegistry) -> Iterator[str]:
    with RuntimeServer(build_app(registry, site=SITE, extra_routes=ofrep_routes(registry.flags))) as server:
        yield f"http://127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def openfeature(base_url: str) -> Iterator[Any]:
    provider = OFREPProvider(base_url, timeout=10)
    api.set_provider(provider, "reconciler-ofrep")
    yield api.get_client("reconciler-ofrep")
    api.clear_providers()
    provider.session.close()


# --- the real OpenFeature client ------------------------------------------------------------------

CLIENT_CASES = [
    ("bool from the site's labels", "get_boolean_details", "dark-mode", False, None, {}, True, "on", Reason.TARGETING_MATCH),
    ("bool with the caller's region", "get_boolean_details", "dark-mode", False, None, {"region": "us-east"}, False, "off", Reason.TARGETING_MATCH),
    ("string for the site", "get_string_details", "greeting", "hi", None, {}, "hello", "hello", Reason.DEFAULT),
    ("string targeted by key", "get_string_details", "greeting", "hi", "store-hamburg-02", {}, "moin", "moin", Reason.TARGETING_MATCH),
    ("integer", "get_integer_details", "max-batch", 1, None, {}, 8, "small", Reason.DEFAULT),
    ("integer targeted by attribute", "get_integer_details", "max-batch", 1, None, {"tier": "flagship"}, 64, "large", Reason.TARGETING_MATCH),
    ("float", "get_float_details", "ratio", 0.5, None, {}, 0.25, "low", Reason.STATIC),
    ("object", "get_object_details", "limits", {}, None, {}, {"rps": 10, "burst": [1, 2]}, "tight", Reason.STATIC),
]


@pytest.mark.parametrize(
    "method, key, default, targeting_key, attributes, value, variant, reason",
    [c[1:] for c in CLIENT_CASES],
    ids=[c[0] for c in CLIENT_CASES],
)
def test_openfeature_client_reads_our_flags(
    openfeature: Any, method: str, key: str, default: Any, targeting_key: str | None, attributes: dict,
    value: Any, variant: str, reason: Reason,
):
    details = getattr(openfeature, method)(key, default, EvaluationContext(targeting_key, attributes))
    assert (details.value, details.variant, details.reason, details.error_code) == (value, variant, reason, None)
    assert details.flag_metadata == FLAGS[key].get("metadata", {})


@pytest.mark.parametrize(
    "method, key, default, error_code",
    [
        ("get_boolean_details", "no-such-flag", True, ErrorCode.FLAG_NOT_FOUND),
        ("get_string_details", "dark-mode", "code", ErrorCode.TYPE_MISMATCH),
        ("get_integer_details", "greeting", 3, ErrorCode.TYPE_MISMATCH),
        ("get_boolean_details", "broken", True, ErrorCode.PARSE_ERROR),
        ("get_boolean_details", "wrong-variant", True, ErrorCode.GENERAL),
    ],
)
def test_openfeature_client_gets_its_default_and_the_error(
    openfeature: Any, method: str, key: str, default: Any, error_code: ErrorCode
):
    details = getattr(openfeature, method)(key, default)
    assert (details.value, details.reason, details.error_code) == (default, Reason.ERROR, error_code)


@pytest.mark.parametrize("key", ["retired", "code-default"])
def test_openfeature_client_keeps_its_code_default(openfeature: Any, key: str):
    # The response defers to the code default (no value); openfeature-provider-ofrep 0.3 does not
    # know that shape yet and reports it as an error, but hands out the code default all the same.
    assert openfeature.get_boolean_value(key, False) is False
    assert openfeature.get_boolean_value(key, True) is True


# --- the protocol's shapes over raw HTTP ----------------------------------------------------------


@pytest.mark.parametrize(
    "key, body, status, expected",
    [
        ("dark-mode", {}, 200, {"key": "dark-mode", "reason": "TARGETING_MATCH", "value": True, "variant": "on", "metadata": OWNER}),
        ("greeting", {"context": {"targetingKey": "store-hamburg-1"}}, 200, {"key": "greeting", "reason": "TARGETING_MATCH", "value": "moin", "variant": "moin", "metadata": {}}),
        ("limits", None, 200, {"key": "limits", "reason": "STATIC", "value": {"rps": 10, "burst": [1, 2]}, "variant": "tight", "metadata": {}}),
        ("retired", {}, 200, {"key": "retired", "reason": "DISABLED", "metadata": {}}),
        ("code-default", {}, 200, {"key": "code-default", "reason": "DEFAULT", "metadata": OWNER}),
        ("no-such-flag", {}, 404, {"key": "no-such-flag", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "flag 'no-such-flag' not found"}),
        ("broken", {}, 400, {"key": "broken", "errorCode": "PARSE_ERROR", "errorDetails": "targeting uses unknown operation 'no_such_operation'"}),
        ("wrong-variant", {}, 400, {"key": "wrong-variant", "errorCode": "GENERAL", "errorDetails": "targeting returned 'maybe', which is not a variant of 'wrong-variant'"}),
        ("dark-mode", {"context": None}, 200, {"key": "dark-mode", "reason": "TARGETING_MATCH", "value": True, "variant": "on", "metadata": OWNER}),
    ],
)
def test_single_evaluation_shapes(http: httpx.Client, key: str, body: dict | None, status: int, expected: dict):
    response = http.post(SINGLE.format(key), content=b"" if body is None else json.dumps(body).encode())
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == expected


BAD_BODIES = [
    ("not json", b"{context", "request body is not valid JSON"),
    ("not an object", b"[1, 2]", "request body must be a JSON object"),
    ("context a list", b'{"context": ["eu"]}', "'context' must be a JSON object"),
    ("context a string", b'{"context": "eu"}', "'context' must be a JSON object"),
]


@pytest.mark.parametrize("body, message", [c[1:] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
def test_malformed_requests_are_400_invalid_context(http: httpx.Client, body: bytes, message: str):
    single = http.post(SINGLE.format("dark-mode"), content=body)
    bulk = http.post(BULK, content=body)

    assert (single.status_code, bulk.status_code) == (400, 400)
    assert single.json() == {"key": "dark-mode", "errorCode": "INVALID_CONTEXT", "errorDetails": single.json()["errorDetails"]}
    assert bulk.json() == {"errorCode": "INVALID_CONTEXT", "errorDetails": bulk.json()["errorDetails"]}
    assert message in single.json()["errorDetails"] and message in bulk.json()["errorDetails"]


def test_bulk_evaluation_lists_every_enabled_flag(http: httpx.Client):
    response = http.post(BULK, json={"context": {"tier": "flagship"}})

    assert response.status_code == 200
    flags = response.json()["flags"]
    assert [flag["key"] for flag in flags] == sorted(key for key, flag in FLAGS.items() if flag["state"] == "ENABLED")
    by_key = {flag["key"]: flag for flag in flags}
    assert by_key["max-batch"] == {"key": "max-batch", "reason": "TARGETING_MATCH", "value": 64, "variant": "large", "metadata": {}}
    assert by_key["code-default"] == {"key": "code-default", "reason": "DEFAULT", "metadata": OWNER}
    assert by_key["broken"] == {"key": "broken", "errorCode": "PARSE_ERROR", "errorDetails": "targeting uses unknown operation 'no_such_operation'"}


def test_bulk_etag_answers_304_while_nothing_changed(http: httpx.Client, registry: ModelRegistry):
    first = http.post(BULK, json={"context": {"region": "us-east"}})
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')

    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = http.post(BULK, json={"context": {"region": "us-east"}}, headers={"if-none-match": if_none_match})
        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag), if_none_match
    other_context = http.post(BULK, json={"context": {"region": "eu-central"}}, headers={"if-none-match": etag})
    assert other_context.status_code == 200 and other_context.headers["etag"] != etag

    original = registry.flags()
    registry.set_flags(_flag_set({**FLAGS, "dark-mode": {**FLAGS["dark-mode"], "targeting": None}}), original[1])
    try:
        changed = http.post(BULK, json={"context": {"region": "us-east"}}, headers={"if-none-match": etag})
    finally:
        registry.set_flags(*original)
    assert changed.status_code == 200 and changed.headers["etag"] != etag


def test_only_post_is_allowed(http: httpx.Client):
    assert http.get(SINGLE.format("dark-mode")).status_code == 405
    assert http.get(BULK).status_code == 405


def test_flags_are_evaluated_at_the_current_time(registry: ModelRegistry):
    """``$flagd.timestamp`` is the clock's: the real one is before the launch, a later one after."""
    real = build_app(registry, site=SITE, extra_routes=ofrep_routes(registry.flags))
    later = build_app(
        registry, site=SITE, extra_routes=ofrep_routes(registry.flags, clock=lambda: datetime(2031, 1, 1, tzinfo=UTC))
    )
    values = []
    for app in (real, later):
        with RuntimeServer(app) as server:
            values.append(httpx.post(f"http://127.0.0.1:{server.port}{SINGLE.format('launched')}").json()["value"])
    assert values == [datetime.now(UTC) >= datetime(2030, 3, 17, 17, 46, 40, tzinfo=UTC), True]
