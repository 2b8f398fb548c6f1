"""flagd's custom JsonLogic operations (``fractional``, ``sem_ver``, ``starts_with``, ``ends_with``)
added to JsonLogic's own, as flagd's Go evaluator defines them: ``OPERATIONS``."""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Mapping
from typing import Any

from reconciler.flags import jsonlogic
from reconciler.flags.jsonlogic import OperationFailed
from reconciler.flags.jsoperations import Operation
from reconciler.flags.murmur import bucket
from reconciler.flags.semver import sem_ver

_MAX_TOTAL_WEIGHT = 2**31 - 1  # flagd caps the sum of fractional weights at MaxInt32


class Notes:
    """What custom operations report about one evaluation. A bare class: one is made per evaluation."""

    split = False  # a fractional took part


def _string_pair(name: str, args: list[Any]) -> tuple[str, str]:
    if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], str):
        raise OperationFailed(f"{name} takes two strings, got {args!r}")
    return args[0], args[1]


def _starts_with(args: list[Any], _data: Any, _notes: Notes) -> bool:
    text, prefix = _string_pair("starts_with", args)
    return text.startswith(prefix)


def _ends_with(args: list[Any], _data: Any, _notes: Notes) -> bool:
    text, suffix = _string_pair("ends_with", args)
    return text.endswith(suffix)


def _targeting_bucketing_value(data: Any) -> str:
    """What flagd buckets on when the rule names nothing: flagKey + targetingKey."""
    context = data if isinstance(data, dict) else {}
    targeting_key = context.get("targetingKey")
    if not isinstance(targeting_key, str):
        raise OperationFailed("fractional has no bucketing value and the context no targetingKey")
    flagd = context.get("$flagd")
    flag_key = flagd.get("flagKey", "") if isinstance(flagd, dict) else ""
    return f"{flag_key}{targeting_key}"


def _bucketing(args: list[Any], data: Any) -> tuple[str, list[Any]]:
    """The bucketing value and the [variant, weight] entries. Without a string first argument
    (omitted, or an expression that came out null) flagd buckets on flagKey + targetingKey."""
    if not args:
        raise OperationFailed("fractional needs at least one [variant, weight] entry")
    if isinstance(args[0], str):
        return args[0], args[1:]
    return _targeting_bucketing_value(data), args[1:] if args[0] is None else args


def _entry(entry: Any) -> tuple[Any, int]:
    """One [variant, weight] entry; the weight defaults to 1 and a negative one counts as 0."""
    if not isinstance(entry, list) or not entry:
        raise OperationFailed(f"fractional entry {entry!r} is not a non-empty [variant, weight] list")
    variant = entry[0]
    if variant is not None and not isinstance(variant, str | bool | int | float):
        raise OperationFailed(f"fractional variant {variant!r} is not a string, boolean, number or null")
    weight = entry[1] if len(entry) > 1 and entry[1] is not None else 1
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise OperationFailed(f"fractional weight {weight!r} is not a number")
    if isinstance(weight, float) and not weight.is_integer():
        raise OperationFailed(f"fractional weight {weight!r} is not a whole number")
    if weight > _MAX_TOTAL_WEIGHT:
        raise OperationFailed(f"fractional weight {weight!r} exceeds {_MAX_TOTAL_WEIGHT}")
    return variant, max(int(weight), 0)


def _distribution(raw_entries: list[Any]) -> tuple[list[Any], list[int]]:
    """The entries' variants, and the running sums of their weights."""
    entries = [_entry(entry) for entry in raw_entries]
    bounds = list(itertools.accumulate(weight for _, weight in entries))
    total = bounds[-1] if bounds else 0
    if not 0 < total <= _MAX_TOTAL_WEIGHT:
        raise OperationFailed(f"fractional weights sum to {total}, outside 1..{_MAX_TOTAL_WEIGHT}")
    return [variant for variant, _ in entries], bounds


# Bucketing values repeat (a site, a user, evaluated again and again) and murmur3 in Python costs
# microseconds; the cache is bounded so that a stream of new keys cannot grow it.
_bucket = functools.lru_cache(maxsize=4096)(bucket)


def _pick(variants: list[Any], bounds: list[int], bucketing_value: str, notes: Notes) -> Any:
    notes.split = True
    return variants[bisect.bisect_right(bounds, _bucket(bucketing_value, bounds[-1]))]


def _fractional(args: list[Any], data: Any, notes: Notes) -> Any:
    bucketing_value, raw_entries = _bucketing(args, data)
    return _pick(*_distribution(raw_entries), bucketing_value, notes)


def _compile_fractional(
    args: list[Any], operations: Mapping[str, Operation]
) -> jsonlogic.Compiled | None:
    """Literal entries, the usual case, weighed once. What the first argument is only shows at run
    time: a string is the bucketing value, null asks for the targetingKey, anything else is an entry
    after all, for the general way. Invalid entries are left to the general way too, which fails on
    them at run time, after evaluating the first argument, as before."""
    if not args:
        return None
    # The shorthand (no bucketing argument) buckets exactly as a null bucketing value does.
    first, raw_entries = (None, args) if isinstance(args[0], list) else (args[0], args[1:])
    if not all(
        isinstance(entry, list) and not any(isinstance(item, dict | list) for item in entry)
        for entry in raw_entries
    ):
        return None
    try:
        variants, bounds = _distribution(raw_entries)
    except OperationFailed:
        return None
    bucketing = jsonlogic.compile_logic(first, operations)

    def fractional(data: Any, notes: Notes) -> Any:
        value = bucketing(data, notes)
        if value is None:
            value = _targeting_bucketing_value(data)
        elif not isinstance(value, str):
            return _fractional([value, *(list(entry) for entry in raw_entries)], data, notes)
        return _pick(variants, bounds, value, notes)

    return fractional


OPERATIONS: Mapping[str, Operation] = {
    **jsonlogic.OPERATIONS,
    "fractional": jsonlogic.Specializable(_fractional, _compile_fractional),
    "sem_ver": sem_ver,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
}
