"""JsonLogic (https://jsonlogic.com), the language of flagd targeting rules.

Written here rather than taken from PyPI: json-logic and json-logic-qubit are unmaintained, and
panzi-json-logic (the one flagd's Python provider uses) departs from json-logic-js in loose equality
(null == 0), string conversion (True -> "True") and division by zero (raises); none of them lets a
custom operation report back to its caller, which ``fractional`` needs to mark a SPLIT.

Semantics follow json-logic-js, because flagd's rules are written against it: JavaScript truthiness
except that an empty array is false; ``==`` with JavaScript coercion; ``+`` and ``*`` through
parseFloat; ``-``, ``/``, ``%`` and the comparisons through Number(). Built-in operations never raise on
odd input: they return a falsy, NaN or null value, as flagd documents.

A rule is compiled into nested closures (``compile_logic``) so that evaluating it again and again
does not walk its dicts each time; ``apply`` compiles and runs in one go.

JavaScript's value semantics live in ``jsvalues`` and the eager operations on plain values in
``jsoperations``; this module holds the operations that read data (``var``, ``missing``), the set
lookup compiled for ``in`` a literal list, the ``OPERATIONS`` table and the compiler.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.flags.jsoperations import (
    Operation,
    add,
    argument,
    cat,
    chain,
    contains,
    divide,
    extreme,
    merge,
    multiply,
    remainder,
    substr,
    subtract,
)
from reconciler.flags.jsvalues import (
    less,
    less_or_equal,
    loose_equal,
    strict_equal,
    to_js_string,
    to_number,
    truthy,
)

Compiled = Callable[[Any, Any], Any]
"""A rule compiled into nested closures: (data, scratch) -> result."""


@dataclass(frozen=True, slots=True)
class Specializable:
    """An eager operation that compiles a faster closure of its own for the argument shapes it knows
    (``specialize`` returns None for the others, which are evaluated the general way)."""

    operation: Operation
    specialize: Callable[[list[Any], Mapping[str, Operation]], Compiled | None]

    def __call__(self, args: list[Any], data: Any, scratch: Any) -> Any:
        return self.operation(args, data, scratch)


class UnknownOperation(ValueError):
    """The rule names an operation nobody provides."""


class OperationFailed(Exception):
    """Raised by a custom operation whose arguments make no sense; the caller decides what follows."""


_INDEX = re.compile(r"0|[1-9][0-9]*")  # "01" is a property name, not an index, in JavaScript


def _walk(node: Any, parts: list[str], fallback: Any) -> Any:
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and _INDEX.fullmatch(part) and int(part) < len(node):
            node = node[int(part)]
        else:
            return fallback
    return node


def _var(args: list[Any], data: Any, _scratch: Any) -> Any:
    path, fallback = argument(args, 0), argument(args, 1)
    if path is None or path == "":
        return data
    return _walk(data, to_js_string(path).split("."), fallback)


def _compile_var(args: list[Any], _operations: Mapping[str, Operation]) -> Compiled | None:
    """``var`` of a literal path, split once; a path built by an expression takes the general way."""
    if len(args) > 2 or any(_is_logic(arg) for arg in args):
        return None
    path, fallback = argument(args, 0), argument(args, 1)
    if path is None or path == "":
        return lambda data, _scratch: data
    if not isinstance(path, str):
        return None
    parts = path.split(".")
    if len(parts) > 1:
        return lambda data, _scratch: _walk(data, parts, fallback)

    def top_level(data: Any, _scratch: Any) -> Any:
        # A plain dict answers in one lookup what _walk finds in two.
        return data.get(path, fallback) if type(data) is dict else _walk(data, parts, fallback)

    return top_level


def _missing(args: list[Any], data: Any, _scratch: Any) -> list[Any]:
    names = args[0] if args and isinstance(args[0], list) else args
    return [name for name in names if _var([name], data, None) in (None, "")]


def _missing_some(args: list[Any], data: Any, _scratch: Any) -> list[Any]:
    names = argument(args, 1) if isinstance(argument(args, 1), list) else []
    absent = _missing([names], data, None)
    return [] if len(names) - len(absent) >= to_number(argument(args, 0)) else absent


def _compile_in(args: list[Any], operations: Mapping[str, Operation]) -> Compiled | None:
    """``in`` a literal array of strings, the usual shape of a targeting list, as one set lookup: only a
    string is strictly equal to a string."""
    if len(args) != 2 or not isinstance(args[1], list) or not all(type(item) is str for item in args[1]):
        return None
    needle, names = compile_logic(args[0], operations), frozenset(args[1])

    def contained(data: Any, scratch: Any) -> bool:
        value = needle(data, scratch)
        return type(value) is str and value in names

    return contained


OPERATIONS: Mapping[str, Operation] = {
    "var": Specializable(_var, _compile_var),
    "missing": _missing,
    "missing_some": _missing_some,
    "==": lambda args, _d, _s: loose_equal(argument(args, 0), argument(args, 1)),
    "!=": lambda args, _d, _s: not loose_equal(argument(args, 0), argument(args, 1)),
    "===": lambda args, _d, _s: strict_equal(argument(args, 0), argument(args, 1)),
    "!==": lambda args, _d, _s: not strict_equal(argument(args, 0), argument(args, 1)),
    "!": lambda args, _d, _s: not truthy(argument(args, 0)),
    "!!": lambda args, _d, _s: truthy(argument(args, 0)),
    "<": chain(less),
    "<=": chain(less_or_equal),
    ">": lambda args, _d, _s: less(argument(args, 1), argument(args, 0)),
    ">=": lambda args, _d, _s: less_or_equal(argument(args, 1), argument(args, 0)),
    "max": extreme(max, -math.inf),
    "min": extreme(min, math.inf),
    "+": add,
    "-": subtract,
    "*": multiply,
    "/": divide,
    "%": remainder,
    "in": Specializable(contains, _compile_in),
    "cat": cat,
    "substr": substr,
    "merge": merge,
}
"""The eager built-in operations; callers extend a copy of this mapping with their own."""


# --- compilation --------------------------------------------------------------------------------------

# Builds the closure of an operation that decides itself which arguments to evaluate, and in which data.
Control = Callable[[list[Any], Mapping[str, Operation]], Compiled]


def compile_logic(logic: Any, operations: Mapping[str, Operation] = OPERATIONS) -> Compiled:
    """``logic`` read once into closures that evaluate it as ``apply`` does, without re-reading its dicts
    on every evaluation. An unknown operation compiles to a closure that raises UnknownOperation when
    (and only when) it is reached."""
    if isinstance(logic, list):
        return _compile_items(logic, operations)
    if not isinstance(logic, dict) or len(logic) != 1:
        return _constant(logic)  # a scalar, or data: an object is an operation only with a single key
    [(name, raw)] = logic.items()
    args = raw if isinstance(raw, list) else [raw]
    control = _CONTROL.get(name)
    if control is not None:
        return control(args, operations)
    operation = operations.get(name)
    if operation is None:
        return _unknown(name)
    if isinstance(operation, Specializable):
        specialized = operation.specialize(args, operations)
        if specialized is not None:
            return specialized
    arguments = _compile_items(args, operations)
    return lambda data, scratch: operation(arguments(data, scratch), data, scratch)


def apply(
    logic: Any, data: Any, operations: Mapping[str, Operation] = OPERATIONS, scratch: Any = None
) -> Any:
    """Evaluate ``logic`` against ``data``. ``scratch`` is handed, untouched, to every eager operation so
    that custom operations can leave notes for the caller. Raises UnknownOperation for an unknown name
    (call ``check`` first to find those regardless of which branches run), and lets OperationFailed
    from custom operations through. To evaluate one rule many times, ``compile_logic`` it once."""
    return compile_logic(logic, operations)(data, scratch)


def _constant(value: Any) -> Compiled:
    return lambda _data, _scratch: value


def _unknown(name: str) -> Compiled:
    def fail(_data: Any, _scratch: Any) -> Any:
        raise UnknownOperation(name)

    return fail


def _is_logic(item: Any) -> bool:
    return isinstance(item, dict | list)


def _compile_items(items: list[Any], operations: Mapping[str, Operation]) -> Compiled:
    """A new list of the items evaluated: an array in a rule, or the arguments of an eager operation.
    Scalars are the rule's own objects."""
    if not any(_is_logic(item) for item in items):
        scalars = tuple(items)
        return lambda _data, _scratch: list(scalars)
    if not any(_is_logic(item) for item in items[1:]):
        # The usual arguments of a comparison: an expression, then literals ({"==": [{"var": ...}, 3]}).
        head, tail = compile_logic(items[0], operations), tuple(items[1:])
        return lambda data, scratch: [head(data, scratch), *tail]
    compiled = [compile_logic(item, operations) for item in items]
    if len(compiled) == 2:
        first, second = compiled
        return lambda data, scratch: [first(data, scratch), second(data, scratch)]
    return lambda data, scratch: [item(data, scratch) for item in compiled]


def _compile_if(args: list[Any], operations: Mapping[str, Operation]) -> Compiled:
    compiled = [compile_logic(arg, operations) for arg in args]
    if len(compiled) == 3:
        condition, then, otherwise = compiled
        return lambda data, scratch: (
            then(data, scratch) if truthy(condition(data, scratch)) else otherwise(data, scratch)
        )
    branches = [(compiled[index], compiled[index + 1]) for index in range(0, len(compiled) - 1, 2)]
    last = compiled[-1] if len(compiled) % 2 else _constant(None)

    def choose(data: Any, scratch: Any) -> Any:
        for condition, then in branches:
            if truthy(condition(data, scratch)):
                return then(data, scratch)
        return last(data, scratch)

    return choose


def _short_circuit(stop_on_truthy: bool):
    """``and`` stops at the first falsy operand, ``or`` at the first truthy one; both answer the
    operand they stopped at, or the last one."""
    def compile_(args: list[Any], operations: Mapping[str, Operation]) -> Compiled:
        compiled = [compile_logic(arg, operations) for arg in args]

        def first_deciding(data: Any, scratch: Any) -> Any:
            value = None
            for operand in compiled:
                value = operand(data, scratch)
                if truthy(value) is stop_on_truthy:
                    return value
            return value

        return first_deciding

    return compile_


def _compile_iteration(args: list[Any], operations: Mapping[str, Operation]) -> tuple[Compiled, Compiled]:
    """The array (anything else counts as empty) and the logic applied to each item of it."""
    array = compile_logic(args[0], operations) if args else _constant(None)
    logic = compile_logic(argument(args, 1), operations)

    def items(data: Any, scratch: Any) -> list[Any]:
        value = array(data, scratch)
        return value if isinstance(value, list) else []

    return items, logic


def _compile_map(args: list[Any], operations: Mapping[str, Operation]) -> Compiled:
    items, logic = _compile_iteration(args, operations)
    return lambda data, scratch: [logic(item, scratch) for item in items(data, scratch)]


def _compile_filter(args: list[Any], operations: Mapping[str, Operation]) -> Compiled:
    items, logic = _compile_iteration(args, operations)
    return lambda data, scratch: [item for item in items(data, scratch) if truthy(logic(item, scratch))]


def _compile_all(args: list[Any], operations: Mapping[str, Operation]) -> Compiled:
    items, logic = _compile_iteration(args, operations)

    def every(data: Any, scratch: Any) -> bool:
        values = items(data, scratch)
        return bool(values) and all(truthy(logic(item, scratch)) for item in values)

    return every


def _compile_none(args: list[Any], operations: Mapping[str, Operation]) -> Compiled:
    matches = _compile_filter(args, operations)  # every item is tested, as json-logic-js does
    return lambda data, scratch: not matches(data, scratch)


def _compile_some(args: list[Any], operations: Mapping[str, Operation]) -> Compiled:
    matches = _compile_filter(args, operations)
    return lambda data, scratch: bool(matches(data, scratch))


def _compile_reduce(args: list[Any], operations: Mapping[str, Operation]) -> Compiled:
    logic = compile_logic(argument(args, 1), operations)
    initial = compile_logic(args[2], operations) if len(args) > 2 else _constant(None)
    array = compile_logic(args[0], operations) if args else _constant(None)

    def fold(data: Any, scratch: Any) -> Any:
        accumulator = initial(data, scratch)
        items = array(data, scratch)
        if not isinstance(items, list):
            return accumulator
        for item in items:
            accumulator = logic({"current": item, "accumulator": accumulator}, scratch)
        return accumulator

    return fold


_CONTROL: Mapping[str, Control] = {
    "if": _compile_if,
    "?:": _compile_if,
    "and": _short_circuit(stop_on_truthy=False),
    "or": _short_circuit(stop_on_truthy=True),
    "map": _compile_map,
    "filter": _compile_filter,
    "reduce": _compile_reduce,
    "all": _compile_all,
    "none": _compile_none,
    "some": _compile_some,
}


def check(logic: Any, operations: Mapping[str, Operation] = OPERATIONS) -> None:
    """Raise UnknownOperation if any operation anywhere in ``logic`` is unknown."""
    if isinstance(logic, dict) and len(logic) == 1:
        [(name, raw)] = logic.items()
        if name not in _CONTROL and name not in operations:
            raise UnknownOperation(name)
        check(raw, operations)
    elif isinstance(logic, list):
        for item in logic:
            check(item, operations)
