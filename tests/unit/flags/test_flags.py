from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import pytest

from reconciler.flags import (
    ErrorCode,
    FlagFile,
    FlagSet,
    Reason,
    bucket,
    evaluate,
    evaluate_all,
    site_context,
    targeting_errors,
)
from reconciler.flags.jsonlogic import OperationFailed
from reconciler.flags.semver import parse_version, sem_ver

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NOW_SECONDS = 1777636800


def flag_set(flags: dict[str, Any], evaluators: dict[str, Any] | None = None) -> FlagSet:
    """A FlagSet read through the real flag-file model, as the loader builds it."""
    document = FlagFile.model_validate({"flags": flags, "$evaluators": evaluators or {}})
    return FlagSet(flags=dict(document.flags), evaluators=dict(document.evaluators))


def enabled(
    variants: dict[str, Any], default: str | None, targeting: Any = None, **extra: Any
) -> dict[str, Any]:
    spec = {"state": "ENABLED", "variants": variants, "defaultVariant": default, **extra}
    if targeting is not None:
        spec["targeting"] = targeting
    return spec


COLORS = {"red": "#f00", "green": "#0f0", "blue": "#00f"}


class Tier(StrEnum):
    GOLD = "gold"
    TIER = "tier"


SAME = {name: name for name in ("one", "two", "true", "false", "fallback")}

# --- reasons and error codes ---------------------------------------------------------------------

REASON_FLAGS = flag_set(
    {
        "static": enabled(COLORS, "red"),
        "empty-targeting": enabled(COLORS, "red", {}),
        "matched": enabled(COLORS, "red", {"if": [{"==": [{"var": "tier"}, "gold"]}, "green", "blue"]}),
        "split": enabled(COLORS, "red", {"fractional": [["green", 1], ["blue", 1]]}),
        "null-targeting": enabled(COLORS, "red", {"if": [True, None, "blue"]}),
        "no-else": enabled(COLORS, "red", {"if": [{"==": [{"var": "tier"}, "gold"]}, "green"]}),
        "code-default": enabled({"on": True, "off": False}, None),
        "code-default-targeted": enabled(
            {"on": True, "off": False}, None, {"if": [{"==": [{"var": "tier"}, "gold"]}, "on", None]}
        ),
        "disabled": {"state": "DISABLED", "variants": COLORS, "defaultVariant": "red"},
        "unknown-operation": enabled(COLORS, "red", {"invalid": ["this is not valid targeting"]}),
        "unknown-in-dead-branch": enabled(COLORS, "red", {"if": [True, "green", {"nope": []}]}),
        "missing-ref": enabled(COLORS, "red", {"if": [{"$ref": "nonexistent"}, "green", "blue"]}),
        "cyclic-ref": enabled(COLORS, "red", {"if": [{"$ref": "loop"}, "green", "blue"]}),
        "not-a-variant": enabled(COLORS, "red", {"if": [True, "purple", "blue"]}),
        "object-result": enabled(COLORS, "red", {"merge": [["red"]]}),
        "map-result": enabled(COLORS, "red", {"var": ""}),
        "overflow": enabled(COLORS, "red", {"if": [{"<": [{"/": [{"var": "big"}, 3]}, 1]}, "green", "blue"]}),
    },
    evaluators={"loop": {"and": [{"$ref": "loop"}]}},
)

REASONS = [
    # key, context, default, value, variant, reason, error code
    ("static", {}, None, "#f00", "red", Reason.STATIC, None),
    ("empty-targeting", {}, None, "#f00", "red", Reason.STATIC, None),
    ("matched", {"tier": "gold"}, None, "#0f0", "green", Reason.TARGETING_MATCH, None),
    ("matched", {"tier": "tin"}, None, "#00f", "blue", Reason.TARGETING_MATCH, None),
    ("split", {"targetingKey": "site-1"}, None, "#0f0", "green", Reason.SPLIT, None),
    ("null-targeting", {}, None, "#f00", "red", Reason.DEFAULT, None),
    ("no-else", {"tier": "tin"}, None, "#f00", "red", Reason.DEFAULT, None),
    ("code-default", {}, True, True, None, Reason.DEFAULT, None),
    ("code-default", {}, False, False, None, Reason.DEFAULT, None),
    ("code-default-targeted", {"tier": "tin"}, "dflt", "dflt", None, Reason.DEFAULT, None),
    ("code-default-targeted", {"tier": "gold"}, "dflt", True, "on", Reason.TARGETING_MATCH, None),
    ("disabled", {"tier": "gold"}, "dflt", "dflt", None, Reason.DISABLED, None),
    ("absent", {}, "dflt", "dflt", None, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND),
    ("unknown-operation", {}, "dflt", "dflt", None, Reason.ERROR, ErrorCode.PARSE_ERROR),
    ("unknown-in-dead-branch", {}, "dflt", "dflt", None, Reason.ERROR, ErrorCode.PARSE_ERROR),
    ("missing-ref", {}, "dflt", "dflt", None, Reason.ERROR, ErrorCode.PARSE_ERROR),
    ("cyclic-ref", {}, "dflt", "dflt", None, Reason.ERROR, ErrorCode.PARSE_ERROR),
    ("not-a-variant", {}, "dflt", "dflt", None, Reason.ERROR, ErrorCode.GENERAL),
    ("object-result", {}, "dflt", "dflt", None, Reason.ERROR, ErrorCode.GENERAL),
    ("map-result", {"a": 1}, "dflt", "dflt", None, Reason.ERROR, ErrorCode.GENERAL),
    ("overflow", {"big": 10**400}, "dflt", "dflt", None, Reason.ERROR, ErrorCode.GENERAL),
    ("matched", {"tier": {1, 2}}, "dflt", "dflt", None, Reason.ERROR, ErrorCode.INVALID_CONTEXT),
    ("matched", {"tier": float("nan")}, "dflt", "dflt", None, Reason.ERROR, ErrorCode.INVALID_CONTEXT),
    (
        "matched",
        {"tier": [{"deep": object()}]},
        "dflt",
        "dflt",
        None,
        Reason.ERROR,
        ErrorCode.INVALID_CONTEXT,
    ),
    ("matched", {1: "gold"}, "dflt", "dflt", None, Reason.ERROR, ErrorCode.INVALID_CONTEXT),
    (
        "matched",
        {"tier": "gold", "x": float("inf")},
        "dflt",
        "dflt",
        None,
        Reason.ERROR,
        ErrorCode.INVALID_CONTEXT,
    ),
    ("matched", {"tier": Tier.GOLD}, None, "#0f0", "green", Reason.TARGETING_MATCH, None),  # a str is JSON
    ("matched", {Tier.TIER: "gold"}, None, "#0f0", "green", Reason.TARGETING_MATCH, None),
    (
        "matched",
        {"tier": "gold", "score": 0.5, "user": {"tags": [1, None]}},
        None,
        "#0f0",
        "green",
        Reason.TARGETING_MATCH,
        None,
    ),
    ("static", {"tier": {1, 2}}, None, "#f00", "red", Reason.STATIC, None),  # no rule reads the context
]


@pytest.mark.parametrize(("key", "context", "default", "value", "variant", "reason", "code"), REASONS)
def test_reasons_and_error_codes(
    key: str,
    context: dict[Any, Any],
    default: Any,
    value: Any,
    variant: str | None,
    reason: Reason,
    code: ErrorCode | None,
) -> None:
    resolution = evaluate(REASON_FLAGS, key, context, NOW, default=default)
    assert (resolution.key, resolution.value, resolution.variant) == (key, value, variant)
    assert (resolution.reason, resolution.error_code) == (reason, code)
    assert (resolution.error_message is None) == (code is None)


def test_error_messages_say_what_went_wrong() -> None:
    assert "'absent'" in (evaluate(REASON_FLAGS, "absent", {}, NOW).error_message or "")
    assert "'$ref'" in (evaluate(REASON_FLAGS, "missing-ref", {}, NOW).error_message or "")
    assert "'purple'" in (evaluate(REASON_FLAGS, "not-a-variant", {}, NOW).error_message or "")
    assert "'tier'" in (evaluate(REASON_FLAGS, "matched", {"tier": {1}}, NOW).error_message or "")


def test_targeting_errors_lists_flags_whose_rules_cannot_run() -> None:
    assert targeting_errors(REASON_FLAGS) == {
        "unknown-operation": "targeting uses unknown operation 'invalid'",
        "unknown-in-dead-branch": "targeting uses unknown operation 'nope'",
        "missing-ref": "targeting uses unknown operation '$ref'",
        "cyclic-ref": "targeting uses unknown operation '$ref'",
    }


def test_deeply_nested_targeting_is_a_parse_error_not_a_crash() -> None:
    logic: Any = True
    for _ in range(5000):
        logic = {"!": [logic]}
    flags = flag_set({"deep": enabled(COLORS, "red", logic)})
    resolution = evaluate(flags, "deep", {}, NOW, default="dflt")
    assert (resolution.value, resolution.error_code) == ("dflt", ErrorCode.PARSE_ERROR)


# --- variant names and values --------------------------------------------------------------------

VALUE_FLAGS = flag_set(
    {
        "boolean": enabled({"on": True, "off": False}, "on"),
        "string": enabled({"greeting": "hi", "parting": "bye"}, "greeting"),
        "integer": enabled({"one": 1, "ten": 10}, "ten"),
        "large-integer": enabled({"max-safe": 9007199254740991}, "max-safe"),
        "float": enabled({"tenth": 0.1, "half": 0.5}, "half"),
        "integral-float": enabled({"ten": 10.0}, "ten"),
        "object": enabled({"empty": {}, "template": {"showImages": True, "imagesPerPage": 100}}, "template"),
        "array": enabled({"none": [], "some": ["a", 1, None]}, "some"),
        "shorthand": enabled(
            {"true": "yes", "false": "no"}, "false", {"ends_with": [{"var": "email"}, "@x.io"]}
        ),
        "boolean-result": enabled({"false": 1, "true": 2}, "false", {"if": [True, True, False]}),
        "number-result": enabled({"1": "one", "2.5": "two and a half"}, "1", {"var": "n"}),
    }
)

VALUES = [
    ("boolean", {}, bool, True, "on"),
    ("string", {}, str, "hi", "greeting"),
    ("integer", {}, int, 10, "ten"),
    ("integer", {}, float, 10.0, "ten"),
    ("large-integer", {}, int, 9007199254740991, "max-safe"),
    ("float", {}, float, 0.5, "half"),
    ("integral-float", {}, float, 10.0, "ten"),
    ("object", {}, dict, {"showImages": True, "imagesPerPage": 100}, "template"),
    ("array", {}, list, ["a", 1, None], "some"),
    ("array", {}, object, ["a", 1, None], "some"),
    ("shorthand", {"email": "ada@x.io"}, str, "yes", "true"),
    ("shorthand", {"email": "ada@y.io"}, str, "no", "false"),
    ("boolean-result", {}, int, 2, "true"),
    ("number-result", {"n": 1}, str, "one", "1"),
    ("number-result", {"n": 1.0}, str, "one", "1"),
    ("number-result", {"n": 2.5}, str, "two and a half", "2.5"),
]


@pytest.mark.parametrize(("key", "context", "expected_type", "value", "variant"), VALUES)
def test_variants_of_every_json_type(
    key: str, context: dict[str, Any], expected_type: type, value: Any, variant: str
) -> None:
    resolution = evaluate(VALUE_FLAGS, key, context, NOW, expected_type=expected_type)
    assert (resolution.value, resolution.variant, resolution.error_code) == (value, variant, None)
    assert type(resolution.value) is type(value)


@pytest.mark.parametrize(
    ("key", "expected_type"),
    [
        ("boolean", str),
        ("boolean", int),
        ("boolean", float),  # bool is an int only in Python
        ("string", bool),
        ("string", int),
        ("string", float),
        ("integer", bool),
        ("integer", str),
        ("float", bool),
        ("float", str),
        ("float", int),
        ("object", list),
        ("array", dict),
        ("string", dict),
    ],
)
def test_type_mismatch_returns_the_callers_default(key: str, expected_type: type) -> None:
    resolution = evaluate(VALUE_FLAGS, key, {}, NOW, expected_type=expected_type, default="fallback")
    assert (resolution.value, resolution.variant) == ("fallback", None)
    assert (resolution.reason, resolution.error_code) == (Reason.ERROR, ErrorCode.TYPE_MISMATCH)


def test_code_defaults_and_disabled_flags_are_not_type_checked() -> None:
    flags = flag_set(
        {"null": enabled({"on": True}, None), "off": {"state": "DISABLED", "variants": {"a": 1}}}
    )
    assert evaluate(flags, "null", {}, NOW, expected_type=bool, default="x").reason == Reason.DEFAULT
    assert evaluate(flags, "off", {}, NOW, expected_type=bool, default="x").reason == Reason.DISABLED


def test_values_and_metadata_are_shared_not_copied() -> None:
    flags = flag_set({"object": enabled({"big": {"k": list(range(100))}}, "big", metadata={"owner": "ml"})})
    first, second = (evaluate(flags, "object", {}, NOW) for _ in range(2))
    assert first.value is second.value is flags.flags["object"].variants["big"]
    assert first.flag_metadata == {"owner": "ml"}


# --- context: $flagd, targetingKey, sites ----------------------------------------------------------

CONTEXT_FLAGS = flag_set(
    {
        "own-key": enabled({"own-key": "mine", "other": "theirs"}, "other", {"var": "$flagd.flagKey"}),
        "after-launch": enabled(
            {"before": -1, "after": 1},
            "before",
            {"if": [{">=": [{"var": "$flagd.timestamp"}, {"var": "launch"}]}, "after", "before"]},
        ),
        "targeting-key": enabled(
            {"hit": "hit", "miss": "miss"},
            "miss",
            {"if": [{"==": [{"var": "targetingKey"}, "5c3d8535-f81a-4478-a6d3-afaa4d51199e"]}, "hit", None]},
        ),
    }
)


@pytest.mark.parametrize(
    ("key", "context", "now", "variant", "reason"),
    [
        ("own-key", {}, NOW, "own-key", Reason.TARGETING_MATCH),
        ("own-key", {"$flagd": {"flagKey": "other"}}, NOW, "own-key", Reason.TARGETING_MATCH),
        ("after-launch", {"launch": NOW_SECONDS}, NOW, "after", Reason.TARGETING_MATCH),
        ("after-launch", {"launch": NOW_SECONDS + 1}, NOW, "before", Reason.TARGETING_MATCH),
        ("after-launch", {"launch": NOW_SECONDS}, NOW.replace(tzinfo=None), "after", Reason.TARGETING_MATCH),
        ("after-launch", {"launch": 4133980802}, NOW, "before", Reason.TARGETING_MATCH),
        (
            "targeting-key",
            {"targetingKey": "5c3d8535-f81a-4478-a6d3-afaa4d51199e"},
            NOW,
            "hit",
            Reason.TARGETING_MATCH,
        ),
        (
            "targeting-key",
            {"targetingKey": "f20bd32d-703b-48b6-bc8e-79d53c85134a"},
            NOW,
            "miss",
            Reason.DEFAULT,
        ),
    ],
)
def test_flagd_properties_and_targeting_key(
    key: str, context: dict[str, Any], now: datetime, variant: str, reason: Reason
) -> None:
    resolution = evaluate(CONTEXT_FLAGS, key, context, now)
    assert (resolution.variant, resolution.reason) == (variant, reason)


def test_timestamp_is_whole_unix_seconds() -> None:
    flags = flag_set({"t": enabled({"x": 1}, "x", {"cat": [{"var": "$flagd.timestamp"}]})})
    resolution = evaluate(flags, "t", {}, NOW.replace(microsecond=999999))
    assert resolution.error_message == f"targeting returned '{NOW_SECONDS}', which is not a variant of 't'"


@pytest.mark.parametrize(
    ("now", "seconds"),
    [
        (NOW, NOW_SECONDS),
        (NOW + timedelta(seconds=1), NOW_SECONDS + 1),
        (NOW.replace(tzinfo=None), NOW_SECONDS),
        (NOW.astimezone(timezone(timedelta(hours=2))), NOW_SECONDS),
        (NOW.replace(tzinfo=timezone(timedelta(hours=2))), NOW_SECONDS - 7200),
        (NOW - timedelta(days=1), NOW_SECONDS - 86400),
    ],
)
def test_each_evaluation_reads_its_own_now(now: datetime, seconds: int) -> None:
    flags = flag_set({"t": enabled({"x": 1}, "x", {"cat": [{"var": "$flagd.timestamp"}]})})
    for _ in range(2):
        resolution = evaluate(flags, "t", {}, now)
        assert resolution.error_message == f"targeting returned '{seconds}', which is not a variant of 't'"


def test_the_callers_context_is_not_modified() -> None:
    context = MappingProxyType({"launch": 0})
    assert evaluate(CONTEXT_FLAGS, "after-launch", context, NOW).variant == "after"
    assert dict(context) == {"launch": 0}


def test_site_context_makes_the_site_the_targeting_key() -> None:
    assert site_context("store-0042", {"region": "eu", "tier": "edge"}) == {
        "targetingKey": "store-0042",
        "region": "eu",
        "tier": "edge",
        "site": "store-0042",
    }


def test_a_site_buckets_as_the_waves_do() -> None:
    flags = flag_set(
        {"canary": enabled({"on": True, "off": False}, "off", {"fractional": [["on", 10], ["off", 90]]})}
    )
    for site in ("store-0001", "store-0002", "store-0003", "factory-7"):
        in_canary = bucket("canary" + site, 100) < 10
        assert evaluate(flags, "canary", site_context(site, {}), NOW).variant == (
            "on" if in_canary else "off"
        )


# --- $evaluators and $ref ------------------------------------------------------------------------------

REF_FLAGS = flag_set(
    {
        "direct": enabled(SAME, "fallback", {"if": [{"$ref": "is_ballmer"}, "one", "two"]}),
        "nested": enabled(SAME, "fallback", {"if": [{"$ref": "ballmer_or_gates"}, "one", "two"]}),
        "twice": enabled(SAME, "fallback", {"and": [{"$ref": "is_ballmer"}, {"$ref": "is_ballmer"}, "one"]}),
        "in-fractional": enabled(SAME, "fallback", {"fractional": [{"$ref": "bucket_by_email"}, ["one", 1]]}),
    },
    evaluators={
        "is_ballmer": {"==": ["ballmer@macrosoft.com", {"var": ["email"]}]},
        "ballmer_or_gates": {
            "or": [{"$ref": "is_ballmer"}, {"==": [{"var": "email"}, "gates@macrosoft.com"]}]
        },
        "bucket_by_email": {"var": "email"},
    },
)


@pytest.mark.parametrize(
    ("key", "email", "variant"),
    [
        ("direct", "ballmer@macrosoft.com", "one"),
        ("direct", "user@example.com", "two"),
        ("nested", "gates@macrosoft.com", "one"),
        ("nested", "ballmer@macrosoft.com", "one"),
        ("nested", "user@example.com", "two"),
        ("twice", "ballmer@macrosoft.com", "one"),
        ("in-fractional", "user@example.com", "one"),
    ],
)
def test_refs_are_substituted_recursively(key: str, email: str, variant: str) -> None:
    assert evaluate(REF_FLAGS, key, {"email": email}, NOW).variant == variant


def test_refs_are_resolved_once_per_flag_set() -> None:
    flags = flag_set({"direct": REF_FLAGS.flags["direct"].model_dump()}, REF_FLAGS.evaluators)
    evaluate(flags, "direct", {"email": "x"}, NOW)
    rule = flags._rules["direct"]
    evaluate(flags, "direct", {"email": "y"}, NOW)
    assert flags._rules["direct"] is rule
    assert flags == flag_set({"direct": REF_FLAGS.flags["direct"].model_dump()}, REF_FLAGS.evaluators)


# --- fractional ----------------------------------------------------------------------------------------

SUITS = {suit: suit for suit in ("clubs", "diamonds", "hearts", "spades", "wild")}
QUARTERS = [["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]

FRACTIONAL_FLAGS = flag_set(
    {
        # the flagd-testbed's fractional flags, with its @fractional-v2 expectations below
        "fractional-flag": enabled(
            SUITS,
            "wild",
            {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "user.name"}]}, *QUARTERS]},
        ),
        "fractional-flag-shorthand": enabled(
            {"heads": "heads", "tails": "tails", "draw": "draw"},
            "draw",
            {"fractional": [["heads"], ["tails", 1]]},
        ),
        "fractional-flag-A-shared-seed": enabled(
            SUITS, "wild", {"fractional": [{"cat": ["shared-seed", {"var": "user.name"}]}, *QUARTERS]}
        ),
        "halves": enabled(
            {"lower": "lower", "upper": "upper"},
            "lower",
            {"fractional": [{"var": "targetingKey"}, ["lower", 50], ["upper", 50]]},
        ),
        "uneven": enabled(
            SAME, "fallback", {"fractional": [{"var": "targetingKey"}, ["one", 1], ["two", 99]]}
        ),
        "default-weights": enabled(
            SAME, "fallback", {"fractional": [{"var": "targetingKey"}, ["one"], ["two", None]]}
        ),
        "widest": enabled(
            SAME, "fallback", {"fractional": [{"var": "targetingKey"}, ["one", 2**31 - 2], ["two", 1]]}
        ),
        "zero-weight": enabled(
            SAME, "fallback", {"fractional": [{"var": "targetingKey"}, ["one", 0], ["two", 1]]}
        ),
        "negative-weight": enabled(
            SAME, "fallback", {"fractional": [{"var": "targetingKey"}, ["one", -50], ["two", 100]]}
        ),
        "float-weights": enabled(
            SAME, "fallback", {"fractional": [{"var": "targetingKey"}, ["one", 1.0], ["two", 1.0]]}
        ),
        "nested-if-variant": enabled(
            {"premium": "premium", "standard": "standard", "fallback": "fallback"},
            "fallback",
            {
                "fractional": [
                    {"var": "targetingKey"},
                    [{"if": [{"==": [{"var": "tier"}, "premium"]}, "premium", "standard"]}, 50],
                    ["standard", 50],
                ]
            },
        ),
        "nested-var-variant": enabled(
            {"red": "red", "green": "green", "blue": "blue", "fallback": "fallback"},
            "fallback",
            {"fractional": [{"var": "targetingKey"}, [{"var": "color"}, 50], ["blue", 50]]},
        ),
        "nested-weight": enabled(
            {"red": "red", "blue": "blue", "fallback": "fallback"},
            "fallback",
            {
                "fractional": [
                    {"var": "targetingKey"},
                    ["red", {"if": [{"==": [{"var": "tier"}, "premium"]}, 100, 0]}],
                    ["blue", 10],
                ]
            },
        ),
        "as-condition": enabled(
            {"big": "hundreds", "small": "ones", "fallback": "zero"},
            "fallback",
            {"if": [{"fractional": [[False, 0], [True, 100]]}, "big", "small"]},
        ),
        "as-false-condition": enabled(
            {"big": "hundreds", "small": "ones", "fallback": "zero"},
            "fallback",
            {"if": [{"fractional": [[False, 100], [True, 0]]}, "big", "small"]},
        ),
        "inside-if": enabled(
            SAME,
            "fallback",
            {
                "if": [
                    {"==": [{"var": "tier"}, "beta"]},
                    {"fractional": [["one", 50], ["two", 50]]},
                    "fallback",
                ]
            },
        ),
        "null-bucket-value": enabled(
            SAME, "fallback", {"fractional": [{"var": "missing_key"}, ["one", 50], ["two", 50]]}
        ),
        "single": enabled(
            {"single": "single", "fallback": "fallback"}, "fallback", {"fractional": [["single", 1]]}
        ),
        "literal-bucket-value": enabled(SAME, "fallback", {"fractional": ["fixed", ["one", 1], ["two", 1]]}),
        "bucket-value-is-an-entry": enabled(SAME, "fallback", {"fractional": [{"var": "entry"}, ["two", 1]]}),
        "boolean-variants": enabled(
            {"true": "yes", "false": "no"}, "false", {"fractional": [[True, 1], [False, 1]]}
        ),
    }
)

FRACTIONS = [
    # flagd-testbed @fractional-v2
    ("fractional-flag", {"user": {"name": "jack"}}, "hearts"),
    ("fractional-flag", {"user": {"name": "queen"}}, "spades"),
    ("fractional-flag", {"user": {"name": "ten"}}, "clubs"),
    ("fractional-flag", {"user": {"name": "nine"}}, "diamonds"),
    ("fractional-flag", {"user": {"name": "3"}}, "clubs"),
    ("fractional-flag-shorthand", {"targetingKey": "jon@company.com"}, "heads"),
    ("fractional-flag-shorthand", {"targetingKey": "jane@company.com"}, "tails"),
    ("fractional-flag-A-shared-seed", {"user": {"name": "seven"}}, "hearts"),
    ("fractional-flag-A-shared-seed", {"user": {"name": "eight"}}, "diamonds"),
    ("fractional-flag-A-shared-seed", {"user": {"name": "nine"}}, "clubs"),
    ("fractional-flag-A-shared-seed", {"user": {"name": "two"}}, "spades"),
    # the ends of the 32-bit range (hashes 0, 1, 2^31-1, 2^31, 2^32-1)
    ("halves", {"targetingKey": "ejOoVL"}, "lower"),
    ("halves", {"targetingKey": "bY9fO-"}, "lower"),
    ("halves", {"targetingKey": "SI7p-"}, "lower"),
    ("halves", {"targetingKey": "6LvT0"}, "upper"),
    ("halves", {"targetingKey": "ceQdGm"}, "upper"),
    ("uneven", {"targetingKey": "ejOoVL"}, "one"),
    ("uneven", {"targetingKey": "bY9fO-"}, "one"),
    ("uneven", {"targetingKey": "SI7p-"}, "two"),
    ("uneven", {"targetingKey": "ceQdGm"}, "two"),
    ("default-weights", {"targetingKey": "SI7p-"}, "one"),
    ("default-weights", {"targetingKey": "6LvT0"}, "two"),
    ("widest", {"targetingKey": "6LvT0"}, "one"),
    ("widest", {"targetingKey": "ceQdGm"}, "two"),
    ("zero-weight", {"targetingKey": "ejOoVL"}, "two"),
    ("negative-weight", {"targetingKey": "any-user"}, "two"),
    ("float-weights", {"targetingKey": "SI7p-"}, "one"),
    ("float-weights", {"targetingKey": "6LvT0"}, "two"),
    # nested JsonLogic as variant names and weights (testbed @fractional-nested)
    ("nested-if-variant", {"targetingKey": "jon@company.com", "tier": "premium"}, "premium"),
    ("nested-if-variant", {"targetingKey": "jon@company.com", "tier": "basic"}, "standard"),
    ("nested-if-variant", {"targetingKey": "user1", "tier": "premium"}, "standard"),
    ("nested-var-variant", {"targetingKey": "jon@company.com", "color": "green"}, "green"),
    ("nested-var-variant", {"targetingKey": "user1", "color": "red"}, "blue"),
    ("nested-weight", {"targetingKey": "jon@company.com", "tier": "premium"}, "red"),
    ("nested-weight", {"targetingKey": "jon@company.com", "tier": "basic"}, "blue"),
    ("nested-weight", {"targetingKey": "user1", "tier": "premium"}, "red"),
    ("as-condition", {"targetingKey": "some-targeting-key"}, "big"),
    ("as-false-condition", {"targetingKey": "some-targeting-key"}, "small"),
    ("inside-if", {"targetingKey": "SI7p-", "tier": "beta"}, None),
    ("null-bucket-value", {"targetingKey": "x"}, None),
    ("single", {"targetingKey": "some-targeting-key"}, "single"),
]


@pytest.mark.parametrize(("key", "context", "variant"), FRACTIONS)
def test_fractional_bucketing(key: str, context: dict[str, Any], variant: str | None) -> None:
    resolution = evaluate(FRACTIONAL_FLAGS, key, context, NOW)
    if variant is None:  # shorthand, or a null bucketing value: flagd buckets on flagKey + targetingKey
        variant = "one" if bucket(key + context["targetingKey"], 100) < 50 else "two"
    assert (resolution.variant, resolution.reason) == (variant, Reason.SPLIT)


@pytest.mark.parametrize("targeting_key", ["a", "b", "c"])
def test_fractional_boolean_variants_name_true_and_false(targeting_key: str) -> None:
    resolution = evaluate(FRACTIONAL_FLAGS, "boolean-variants", {"targetingKey": targeting_key}, NOW)
    expected = "true" if bucket("boolean-variants" + targeting_key, 2) == 0 else "false"
    assert (resolution.variant, resolution.value) == (expected, {"true": "yes", "false": "no"}[expected])


@pytest.mark.parametrize("targeting_key", ["a", "b", "c", "d"])
def test_fractional_literal_bucketing_value_ignores_the_targeting_key(targeting_key: str) -> None:
    resolution = evaluate(FRACTIONAL_FLAGS, "literal-bucket-value", {"targetingKey": targeting_key}, NOW)
    assert resolution.variant == ("one" if bucket("fixed", 2) == 0 else "two")


@pytest.mark.parametrize("targeting_key", ["a", "b", "c", "d", "e", "f"])
def test_fractional_first_argument_that_is_an_array_is_an_entry(targeting_key: str) -> None:
    # flagd reads a first argument that is no string and not null as the first [variant, weight].
    context = {"targetingKey": targeting_key, "entry": ["one", 3]}
    resolution = evaluate(FRACTIONAL_FLAGS, "bucket-value-is-an-entry", context, NOW)
    expected = "one" if bucket("bucket-value-is-an-entry" + targeting_key, 4) < 3 else "two"
    assert (resolution.variant, resolution.reason) == (expected, Reason.SPLIT)


def test_fractional_first_argument_that_is_a_number_fails() -> None:
    context = {"targetingKey": "a", "entry": 7}
    resolution = evaluate(FRACTIONAL_FLAGS, "bucket-value-is-an-entry", context, NOW)
    assert (resolution.variant, resolution.reason) == ("fallback", Reason.DEFAULT)


def test_fractional_outside_the_taken_branch_is_a_plain_match() -> None:
    resolution = evaluate(FRACTIONAL_FLAGS, "inside-if", {"targetingKey": "x", "tier": "ga"}, NOW)
    assert (resolution.variant, resolution.reason) == ("fallback", Reason.TARGETING_MATCH)


def test_fractional_distributes_by_weight() -> None:
    flags = flag_set({"tenth": enabled(SAME, "fallback", {"fractional": [["one", 10], ["two", 90]]})})
    picks = [evaluate(flags, "tenth", {"targetingKey": f"user-{n}"}, NOW).variant for n in range(5000)]
    assert 0.08 < picks.count("one") / len(picks) < 0.12


def test_fractional_result_that_is_no_variant_is_an_error() -> None:
    resolution = evaluate(
        FRACTIONAL_FLAGS,
        "nested-var-variant",
        {"targetingKey": "jon@company.com", "color": "yellow"},
        NOW,
        default="fallback",
    )
    assert (resolution.value, resolution.error_code) == ("fallback", ErrorCode.GENERAL)


FAILING_FRACTIONS = {
    "all-zero-weights": {"fractional": [{"var": "targetingKey"}, ["one", 0], ["two", 0]]},
    "no-entries": {"fractional": [{"var": "targetingKey"}]},
    "no-arguments": {"fractional": []},
    "fractional-weight": {"fractional": [{"var": "targetingKey"}, ["one", 0.5], ["two", 1]]},
    "boolean-weight": {"fractional": [{"var": "targetingKey"}, ["one", True]]},
    "string-weight": {"fractional": [{"var": "targetingKey"}, ["one", "50"]]},
    "entry-not-a-list": {"fractional": [{"var": "targetingKey"}, "one"]},
    "empty-entry": {"fractional": [{"var": "targetingKey"}, []]},
    "object-variant": {"fractional": [{"var": "targetingKey"}, [{"a": 1, "b": 2}, 1]]},
    "weight-too-large": {"fractional": [{"var": "targetingKey"}, ["one", 2**31]]},
    "total-too-large": {"fractional": [{"var": "targetingKey"}, ["one", 2**31 - 1], ["two", 1]]},
    "numeric-bucket-value": {"fractional": [{"var": "n"}, ["one", 1]]},
    "shorthand-without-targeting-key": {"fractional": [["one", 1], ["two", 1]]},
    "null-bucket-value-without-targeting-key": {"fractional": [{"var": "missing_key"}, ["one", 1]]},
}


@pytest.mark.parametrize("case", sorted(FAILING_FRACTIONS))
def test_invalid_fractional_falls_back_to_the_default_variant(case: str) -> None:
    # Inside an `if`, as flagd-testbed's @operator-errors: the null must not steer to "false".
    flags = flag_set({case: enabled(SAME, "fallback", {"if": [FAILING_FRACTIONS[case], "true", "false"]})})
    context = {"n": 42} if "targeting-key" in case else {"targetingKey": "user-1", "n": 42}
    resolution = evaluate(flags, case, context, NOW, default="wrong")
    assert (resolution.value, resolution.variant, resolution.reason) == (
        "fallback",
        "fallback",
        Reason.DEFAULT,
    )


# --- sem_ver -----------------------------------------------------------------------------------------

SEMVER_CASES = [
    ("1.2.3", "=", "1.2.3", True),
    ("1.2.3", "=", "1.2.4", False),
    ("1.2.3", "!=", "1.2.4", True),
    ("1.2.3", "!=", "1.2.3", False),
    ("1.2.3", "<", "1.10.0", True),
    ("1.10.0", "<", "1.9.0", False),
    ("1.2.3", "<=", "1.2.3", True),
    ("1.2.4", "<=", "1.2.3", False),
    ("2.0.0", ">", "1.99.99", True),
    ("2.0.0", ">", "2.0.0", False),
    ("2.0.0", ">=", "2.0.0", True),
    ("1.0.0", ">=", "2.0.0", False),
    ("3.7.1", "^", "3.0.0", True),
    ("3.0.0", "^", "3.7.1", True),  # flagd's ^ means "same major", in both directions
    ("4.0.0", "^", "3.0.0", False),
    ("3.0.1", "~", "3.0.0", True),
    ("3.1.0", "~", "3.0.0", False),
    ("3.0.0-beta", "~", "3.0.0", True),
    # pre-release precedence, SemVer 2.0.0 section 11
    ("1.0.0-alpha", "<", "1.0.0-alpha.1", True),
    ("1.0.0-alpha.1", "<", "1.0.0-alpha.beta", True),
    ("1.0.0-alpha.beta", "<", "1.0.0-beta", True),
    ("1.0.0-beta", "<", "1.0.0-beta.2", True),
    ("1.0.0-beta.2", "<", "1.0.0-beta.11", True),
    ("1.0.0-beta.11", "<", "1.0.0-rc.1", True),
    ("1.0.0-rc.1", "<", "1.0.0", True),
    ("2.0.0-alpha", "<", "2.0.0", True),
    ("2.0.0-alpha", "=", "2.0.0", False),
    # build metadata does not count
    ("1.0.0+other", "=", "1.0.0+build", True),
    ("1.0.0-rc.1+a", "=", "1.0.0-rc.1", True),
    # leniencies flagd allows
    ("v1.0.0", "=", "1.0.0", True),
    ("V1.0.0", "=", "v1.0.0", True),
    ("1", "=", "1.0.0", True),
    ("1.2", "=", "1.2.0", True),
    ("1.5.0", "^", "1", True),
    (1, "^", "1", True),
    (2, ">", "1.1", True),
    (1.2, ">", "1.1", True),
    (1.1, ">", "1.1", False),
    (2.0, "=", "2.0.0", True),
]


@pytest.mark.parametrize(("left", "operator", "right", "expected"), SEMVER_CASES)
def test_sem_ver(left: Any, operator: str, right: str, expected: bool) -> None:
    assert sem_ver([left, operator, right], {}, None) is expected


@pytest.mark.parametrize(
    "text",
    [
        "2.0.0.0",
        "not-a-version",
        "01.0.0",
        "1.02.0",
        "1.0.0-01",
        "1.2-alpha",
        "1.0.0-",
        "1.0.0+",
        "",
        "v",
        "vv1.0.0",
        " 1.0.0",
        "1.0.0-alpha..1",
    ],
)
def test_invalid_versions_are_refused(text: str) -> None:
    assert parse_version(text) is None
    with pytest.raises(OperationFailed, match="not a semantic version"):
        sem_ver([text, "=", "1.0.0"], {}, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1.0.0", "="], "2 arguments"),
        (["1.0.0", "=", "1.0.0", "x"], "4 arguments"),
        (["1.0.0", "===", "1.0.0"], "'==='"),
        (["1.0.0", None, "1.0.0"], "None"),
        ([True, "=", "1.0.0"], "True"),
        ([None, "=", "1.0.0"], "None"),
        ([["1.0.0"], "=", "1.0.0"], r"\['1.0.0'\]"),
    ],
)
def test_malformed_sem_ver_is_refused(args: list[Any], message: str) -> None:
    with pytest.raises(OperationFailed, match=message):
        sem_ver(args, {}, None)


VERSION_FLAGS = flag_set(
    {
        "equal-greater-lesser": enabled(
            {name: name for name in ("equal", "greater", "lesser", "none")},
            "none",
            {
                "if": [
                    {"sem_ver": [{"var": "version"}, "=", "2.0.0"]},
                    "equal",
                    {"sem_ver": [{"var": "version"}, ">", "2.0.0"]},
                    "greater",
                    {"sem_ver": [{"var": "version"}, "<", "2.0.0"]},
                    "lesser",
                    "none",
                ]
            },
        ),
        "invalid-operator": enabled(
            SAME, "fallback", {"if": [{"sem_ver": [{"var": "version"}, "===", "1.0.0"]}, "true", "false"]}
        ),
    }
)


@pytest.mark.parametrize(
    ("key", "version", "variant", "reason"),
    [
        ("equal-greater-lesser", "2.0.0", "equal", Reason.TARGETING_MATCH),
        ("equal-greater-lesser", "2.1.0", "greater", Reason.TARGETING_MATCH),
        ("equal-greater-lesser", "1.9.0", "lesser", Reason.TARGETING_MATCH),
        ("equal-greater-lesser", "2.0.0-alpha", "lesser", Reason.TARGETING_MATCH),
        ("equal-greater-lesser", "2.0.0.0", "none", Reason.DEFAULT),
        ("equal-greater-lesser", None, "none", Reason.DEFAULT),
        ("invalid-operator", "1.0.0", "fallback", Reason.DEFAULT),
    ],
)
def test_sem_ver_in_flags(key: str, version: str | None, variant: str, reason: Reason) -> None:
    resolution = evaluate(VERSION_FLAGS, key, {"version": version}, NOW)
    assert (resolution.variant, resolution.reason) == (variant, reason)


# --- starts_with / ends_with -------------------------------------------------------------------------

STRING_FLAGS = flag_set(
    {
        "starts-ends": enabled(
            {name: name for name in ("prefix", "postfix", "none")},
            "none",
            {
                "if": [
                    {"starts_with": [{"var": "id"}, "abc"]},
                    "prefix",
                    {"ends_with": [{"var": "id"}, "xyz"]},
                    "postfix",
                    "none",
                ]
            },
        ),
        "starts-with-non-string": enabled(
            SAME, "fallback", {"if": [{"starts_with": [{"var": "num"}, "abc"]}, "true", "false"]}
        ),
        "ends-with-non-string": enabled(
            SAME, "fallback", {"if": [{"ends_with": [{"var": "num"}, "xyz"]}, "true", "false"]}
        ),
        "starts-with-wrong-args": enabled(
            SAME, "fallback", {"if": [{"starts_with": ["abc"]}, "true", "false"]}
        ),
        "ends-with-wrong-args": enabled(
            SAME, "fallback", {"if": [{"ends_with": ["x", "y", "z"]}, "true", "false"]}
        ),
        "ends-with-number-target": enabled(
            SAME, "fallback", {"if": [{"ends_with": [{"var": "id"}, 3]}, "true", "false"]}
        ),
    }
)


@pytest.mark.parametrize(
    ("key", "context", "variant", "reason"),
    [
        ("starts-ends", {"id": "abcdef"}, "prefix", Reason.TARGETING_MATCH),
        ("starts-ends", {"id": "uvwxyz"}, "postfix", Reason.TARGETING_MATCH),
        ("starts-ends", {"id": "abcxyz"}, "prefix", Reason.TARGETING_MATCH),
        ("starts-ends", {"id": "lmnopq"}, "none", Reason.TARGETING_MATCH),
        ("starts-ends", {"id": ""}, "none", Reason.TARGETING_MATCH),
        ("starts-with-non-string", {"num": 123}, "fallback", Reason.DEFAULT),
        ("ends-with-non-string", {"num": 123}, "fallback", Reason.DEFAULT),
        ("starts-with-wrong-args", {}, "fallback", Reason.DEFAULT),
        ("ends-with-wrong-args", {}, "fallback", Reason.DEFAULT),
        ("ends-with-number-target", {"id": "123"}, "fallback", Reason.DEFAULT),
    ],
)
def test_string_comparisons(key: str, context: dict[str, Any], variant: str, reason: Reason) -> None:
    resolution = evaluate(STRING_FLAGS, key, context, NOW, default="wrong")
    assert (resolution.variant, resolution.reason) == (variant, reason)


def test_failed_operation_without_default_variant_falls_back_to_the_code_default() -> None:
    flags = flag_set({"f": enabled({"on": True}, None, {"if": [{"starts_with": [1, "a"]}, "on", "on"]})})
    resolution = evaluate(flags, "f", {}, NOW, default=False)
    assert (resolution.value, resolution.variant, resolution.reason) == (False, None, Reason.DEFAULT)


# --- bulk -------------------------------------------------------------------------------------------------


def test_evaluate_all_resolves_every_enabled_flag() -> None:
    resolutions = evaluate_all(REASON_FLAGS, {"tier": "gold", "targetingKey": "s1"}, NOW)
    assert "disabled" not in resolutions
    assert set(resolutions) == set(REASON_FLAGS.flags) - {"disabled"}
    assert resolutions["matched"].variant == "green"
    assert resolutions["code-default"].value is None
    assert resolutions["unknown-operation"].error_code == ErrorCode.PARSE_ERROR
    assert all(resolution.key == key for key, resolution in resolutions.items())
