"""Flag evaluation with flagd's semantics, as its Go evaluator and the flagd-testbed gherkin suite define them.

- A missing flag is ERROR / FLAG_NOT_FOUND; a DISABLED one resolves to the caller's default with reason
  DISABLED and no variant.
- No targeting (absent or ``{}``) is STATIC with the default variant.
- Targeting runs as JsonLogic over the context plus ``$flagd.flagKey`` and ``$flagd.timestamp``. Its
  result names the variant (``true``/``false`` name "true"/"false", numbers their JavaScript text):
  TARGETING_MATCH, or SPLIT when a ``fractional`` took part. null means the default variant (reason
  DEFAULT); any other name is ERROR / GENERAL.
- A flag without a default variant falls back to the caller's default, reason DEFAULT, no variant.
- A custom operation given invalid input (a non-string to ``starts_with``, a malformed version, a
  fractional without a bucketing value, ...) makes the whole rule fall back to the default variant,
  reason DEFAULT, even when its null would otherwise steer an ``if`` (testbed ``@operator-errors``).
- An unknown operation, including a ``$ref`` to no evaluator, is ERROR / PARSE_ERROR, whichever branch
  it sits in, as flagd validates the rule before running it.

Each flag is prepared once per flag set, on its first evaluation (reconciler.flags.rules); flagd's
custom operations are reconciler.flags.flagd_operations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.flags import jsonlogic
from reconciler.flags.flagd_operations import Notes
from reconciler.flags.jsonlogic import OperationFailed
from reconciler.flags.jsvalues import to_js_string
from reconciler.flags.resolution import ErrorCode, Reason, Resolution
from reconciler.flags.rules import Rule, prepared

if TYPE_CHECKING:
    from reconciler.flags import FlagSet
    from reconciler.flags.model import FlagDefinition


_JSON_SCALARS = frozenset({str, bool, int, type(None)})  # JSON without looking further
_STRING = frozenset({str})


def _is_json(value: Any) -> bool:
    if type(value) in _JSON_SCALARS or isinstance(value, str | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(name, str) and _is_json(item) for name, item in value.items())
    return False


def _context_problem(context: Mapping[str, Any]) -> str | None:
    # Contexts are mostly flat: a look at the types of keys and values, at C speed, settles the usual case.
    if _JSON_SCALARS.issuperset(map(type, context.values())) and _STRING.issuperset(map(type, context)):
        return None
    for name, value in context.items():
        if not isinstance(name, str):
            return f"context key {name!r} is not a string"
        if not _is_json(value):
            return f"context value of {name!r} is not JSON: {value!r}"
    return None


@functools.lru_cache(maxsize=64)
def _unix_seconds(now: datetime) -> int:
    """A naive ``now`` is taken as UTC: the evaluator must not depend on the host's timezone. Cached
    because callers evaluate many flags at one ``now``."""
    return int((now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp())


def _variant_name(result: Any) -> str | None:
    if isinstance(result, str):
        return result
    if isinstance(result, bool | int | float):
        return to_js_string(result)
    return None


def _error(key: str, default: Any, code: ErrorCode, message: str, metadata: dict[str, Any]) -> Resolution:
    return Resolution(key, default, None, Reason.ERROR, code, message, metadata)


def _code_default(key: str, flag: FlagDefinition, default: Any) -> Resolution:
    """A flag without a default variant hands out the caller's default."""
    return Resolution(key, default, None, Reason.DEFAULT, flag_metadata=flag.metadata)


def _targeted(
    key: str, rule: Rule, run: jsonlogic.Compiled, context: Mapping[str, Any], now: datetime, default: Any
) -> Resolution:
    flag = rule.flag
    problem = _context_problem(context)
    if problem is not None:
        return _error(key, default, ErrorCode.INVALID_CONTEXT, problem, flag.metadata)
    data = {**context, "$flagd": {"flagKey": key, "timestamp": _unix_seconds(now)}}
    notes = Notes()
    try:
        result = run(data, notes)
    except OperationFailed:
        result = None
    except (ArithmeticError, ValueError, RecursionError) as exc:
        # A flag file is untrusted input: numbers too large to convert or rules nested too deeply
        # must cost one evaluation, not the agent.
        return _error(key, default, ErrorCode.GENERAL, f"targeting failed: {exc!r}", flag.metadata)
    if result is None:
        return rule.fallback if rule.fallback is not None else _code_default(key, flag, default)
    variant = _variant_name(result)
    resolutions = rule.split if notes.split else rule.matched
    resolution = resolutions.get(variant) if variant is not None else None
    if resolution is None:
        message = f"targeting returned {result!r}, which is not a variant of {key!r}"
        return _error(key, default, ErrorCode.GENERAL, message, flag.metadata)
    return resolution


def _matches(value: Any, expected: type) -> bool:
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, expected)  # bool, str, dict, list, object


def _typed(resolution: Resolution, expected: type | None, default: Any) -> Resolution:
    if expected is None or resolution.variant is None or type(resolution.value) is expected:
        return resolution  # errors and code defaults carry the caller's own default
    if not _matches(resolution.value, expected):
        message = f"flag {resolution.key!r} is {type(resolution.value).__name__}, not {expected.__name__}"
        return _error(resolution.key, default, ErrorCode.TYPE_MISMATCH, message, resolution.flag_metadata)
    if expected is float and not isinstance(resolution.value, float):
        return Resolution(
            resolution.key,
            float(resolution.value),
            resolution.variant,
            resolution.reason,
            flag_metadata=resolution.flag_metadata,
        )
    return resolution


def evaluate(
    flags: FlagSet,
    key: str,
    context: Mapping[str, Any],
    now: datetime,
    expected_type: type | None = None,
    default: Any = None,
) -> Resolution:
    """Resolve flag ``key`` for ``context`` at ``now``; never raises for anything a flag file or a
    context can contain. ``expected_type`` (bool, str, int, float, dict, list) is checked against the
    resolved value; int satisfies float and comes back as float."""
    rule = prepared(flags, key)
    if rule is None:
        return _error(key, default, ErrorCode.FLAG_NOT_FOUND, f"flag {key!r} not found", {})
    flag = rule.flag
    if flag.state == "DISABLED":
        return Resolution(key, default, None, Reason.DISABLED, flag_metadata=flag.metadata)
    if rule.error is not None:
        return _error(key, default, ErrorCode.PARSE_ERROR, rule.error, flag.metadata)
    if rule.run is None:
        resolution = rule.static if rule.static is not None else _code_default(key, flag, default)
    else:
        resolution = _targeted(key, rule, rule.run, context, now, default)
    return _typed(resolution, expected_type, default)


def evaluate_all(flags: FlagSet, context: Mapping[str, Any], now: datetime) -> dict[str, Resolution]:
    """Every enabled flag, as flagd's bulk evaluation (and so OFREP) returns them: disabled flags are
    left out."""
    return {
        key: evaluate(flags, key, context, now)
        for key, flag in flags.flags.items()
        if flag.state != "DISABLED"
    }


def site_context(site_name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The context the agent evaluates with: the site is the targeting key, its labels the attributes."""
    return {"targetingKey": site_name, **labels, "site": site_name}
