from __future__ import annotations

import math
from typing import Any

import pytest

from reconciler.flags import jsonlogic
from reconciler.flags.jsonlogic import (
    OperationFailed,
    Specializable,
    UnknownOperation,
    apply,
    check,
    compile_logic,
)
from reconciler.flags.jsvalues import truthy

NAN = object()  # marks an expected JavaScript NaN

DATA = {
    "a": 1,
    "s": "abc",
    "empty": "",
    "zero": 0,
    "nothing": None,
    "user": {"name": "ada", "tags": ["x", "y"], "address": {"city": "Turin"}},
    "list": [10, 20, 30],
}

CASES: list[tuple[str, Any, Any, Any]] = [
    # var: dotted paths, defaults, array indexes, the whole data
    ("var top level", {"var": "a"}, DATA, 1),
    ("var scalar shorthand", {"var": ["a"]}, DATA, 1),
    ("var dotted", {"var": "user.address.city"}, DATA, "Turin"),
    ("var array index", {"var": "user.tags.1"}, DATA, "y"),
    ("var index past end", {"var": "list.3"}, DATA, None),
    ("var leading zero is no index", {"var": "list.01"}, DATA, None),
    ("var missing is null", {"var": "nope"}, DATA, None),
    ("var missing uses default", {"var": ["nope", "dflt"]}, DATA, "dflt"),
    ("var missing nested uses default", {"var": ["user.nope.deeper", 7]}, DATA, 7),
    ("var present null is not defaulted", {"var": ["nothing", "dflt"]}, DATA, None),
    ("var through null uses default", {"var": ["nothing.x", "dflt"]}, DATA, "dflt"),
    ("var empty path is the data", {"var": ""}, {"x": 1}, {"x": 1}),
    ("var null path is the data", {"var": None}, 5, 5),
    ("var numeric path into array", {"var": 1}, ["p", "q"], "q"),
    ("var path from an expression", {"var": {"cat": ["us", "er.name"]}}, DATA, "ada"),
    ("var does not reach into strings", {"var": "s.length"}, DATA, None),
    ("var top-level name into an array", {"var": "1"}, ["p", "q"], "q"),
    ("var top-level name of a scalar", {"var": ["a", "dflt"]}, 5, "dflt"),
    ("var top-level name of null data", {"var": "a"}, None, None),
    ("var default from an expression", {"var": ["nope", {"cat": ["d", 1]}]}, DATA, "d1"),
    ("var with extra arguments", {"var": ["a", 2, 3]}, DATA, 1),
    # missing, missing_some
    (
        "missing lists absent and empty",
        {"missing": ["a", "empty", "nothing", "nope", "zero"]},
        DATA,
        ["empty", "nothing", "nope"],
    ),
    ("missing takes an array argument", {"missing": [["a", "nope"]]}, DATA, ["nope"]),
    ("missing nothing", {"missing": ["a", "s"]}, DATA, []),
    ("missing_some satisfied", {"missing_some": [1, ["a", "nope"]]}, DATA, []),
    ("missing_some unsatisfied", {"missing_some": [2, ["a", "nope", "gone"]]}, DATA, ["nope", "gone"]),
    (
        "missing with merge",
        {"if": [{"merge": [{"missing": ["a"]}, {"missing_some": [1, ["x", "y"]]}]}, "incomplete", "ok"]},
        DATA,
        "incomplete",
    ),
    # if and ?:
    ("if true", {"if": [True, "yes", "no"]}, {}, "yes"),
    ("if false", {"if": [False, "yes", "no"]}, {}, "no"),
    ("if else-if chain", {"if": [False, 1, False, 2, 3]}, {}, 3),
    ("if else-if second", {"if": [False, 1, True, 2, 3]}, {}, 2),
    ("if without else", {"if": [False, 1]}, {}, None),
    ("if one argument", {"if": ["only"]}, {}, "only"),
    ("if no arguments", {"if": []}, {}, None),
    ("if is lazy", {"if": [True, "safe", {"nonexistent-op": []}]}, {}, "safe"),
    ("ternary", {"?:": [{"var": "a"}, "one", "other"]}, DATA, "one"),
    # truthiness as json-logic-js defines it
    ("empty array is falsy", {"if": [[], "t", "f"]}, {}, "f"),
    ("non-empty array is truthy", {"if": [[0], "t", "f"]}, {}, "t"),
    ("empty object is truthy", {"!!": [{}]}, {}, True),
    ("string zero is truthy", {"!!": ["0"]}, {}, True),
    ("empty string is falsy", {"!!": [""]}, {}, False),
    ("zero is falsy", {"!!": [0]}, {}, False),
    ("null is falsy", {"!!": [None]}, {}, False),
    ("NaN is falsy", {"!!": [{"+": ["x"]}]}, {}, False),
    ("not", {"!": [True]}, {}, False),
    ("not unwrapped", {"!": False}, {}, True),
    ("not of empty array", {"!": [[]]}, {}, True),
    ("not of nothing", {"!": []}, {}, True),
    # and / or return the deciding value and short-circuit
    ("and all truthy returns last", {"and": [1, "a", [1]]}, {}, [1]),
    ("and returns first falsy", {"and": [1, "", 2]}, {}, ""),
    ("and short-circuits", {"and": [False, {"nonexistent-op": []}]}, {}, False),
    ("and empty", {"and": []}, {}, None),
    ("or returns first truthy", {"or": [0, "", "x", "y"]}, {}, "x"),
    ("or all falsy returns last", {"or": [False, 0]}, {}, 0),
    ("or short-circuits", {"or": [True, {"nonexistent-op": []}]}, {}, True),
    # == with JavaScript coercion
    ("== number and string", {"==": [1, "1"]}, {}, True),
    ("== zero and empty string", {"==": [0, ""]}, {}, True),
    ("== bool and number", {"==": [True, 1]}, {}, True),
    ("== bool and its name", {"==": [True, "true"]}, {}, False),
    ("== null and zero", {"==": [None, 0]}, {}, False),
    ("== null and null", {"==": [None, {"var": "nope"}]}, DATA, True),
    ("== array and string", {"==": [[1, 2], "1,2"]}, {}, True),
    ("== int and float", {"==": [1, 1.0]}, {}, True),
    ("== NaN", {"==": [{"+": ["x"]}, {"+": ["x"]}]}, {}, False),
    ("== strings", {"==": ["a", "b"]}, {}, False),
    ("!= coerces", {"!=": [1, "1"]}, {}, False),
    ("!= differs", {"!=": [1, 2]}, {}, True),
    ("=== same number", {"===": [1, 1.0]}, {}, True),
    ("=== number and string", {"===": [1, "1"]}, {}, False),
    ("=== bool and number", {"===": [True, 1]}, {}, False),
    ("=== nulls", {"===": [None, None]}, {}, True),
    ("=== separate arrays", {"===": [[1], [1]]}, {}, False),
    ("!== number and string", {"!==": [1, "1"]}, {}, True),
    ("!== equal strings", {"!==": ["a", "a"]}, {}, False),
    # comparisons, numeric unless both sides are strings
    ("< numbers", {"<": [1, 2]}, {}, True),
    ("< equal", {"<": [2, 2]}, {}, False),
    ("< strings compare as text", {"<": ["10", "9"]}, {}, True),
    ("< string and number compare as numbers", {"<": ["10", 9]}, {}, False),
    ("< null is zero", {"<": [None, 1]}, {}, True),
    ("< NaN is never less", {"<": ["abc", 1]}, {}, False),
    ("< between exclusive", {"<": [1, 5, 10]}, {}, True),
    ("< between at edge", {"<": [1, 1, 10]}, {}, False),
    ("< between above", {"<": [1, 11, 10]}, {}, False),
    ("<= numbers", {"<=": [2, 2]}, {}, True),
    ("<= between inclusive", {"<=": [1, 1, 10]}, {}, True),
    ("<= between above", {"<=": [1, 11, 10]}, {}, False),
    ("> numbers", {">": [2, 1]}, {}, True),
    ("> not", {">": [1, 2]}, {}, False),
    (">= equal", {">=": [1, 1]}, {}, True),
    (">= string number", {">=": ["2", 10]}, {}, False),
    ("> timestamps", {">": [{"var": "now"}, 1700000000]}, {"now": 1800000000}, True),
    # max, min
    ("max", {"max": [1, 3, 2]}, {}, 3),
    ("max coerces strings", {"max": ["4", 3]}, {}, 4),
    ("max of non-number is NaN", {"max": [1, "x"]}, {}, NAN),
    ("max of nothing", {"max": []}, {}, -math.inf),
    ("min", {"min": [1, -3, 2]}, {}, -3),
    ("min of nothing", {"min": []}, {}, math.inf),
    # arithmetic: + and * through parseFloat, - / % through Number
    ("+ sums", {"+": [1, 2, 3]}, {}, 6),
    ("+ casts a string", {"+": "3.14"}, {}, 3.14),
    ("+ takes the numeric prefix", {"+": ["3abc", 1]}, {}, 4),
    ("+ of nothing", {"+": []}, {}, 0),
    ("+ of a boolean is NaN", {"+": [True, 1]}, {}, NAN),
    ("- subtracts", {"-": [5, 2]}, {}, 3),
    ("- negates", {"-": [2]}, {}, -2),
    ("- negates a numeric string", {"-": ["2"]}, {}, -2),
    ("- with a non-number is NaN", {"-": ["2abc", 1]}, {}, NAN),
    ("* multiplies", {"*": [2, "3", 4]}, {}, 24),
    ("* one argument", {"*": ["2.5"]}, {}, 2.5),
    ("* nothing", {"*": []}, {}, None),
    ("/ divides", {"/": [7, 2]}, {}, 3.5),
    ("/ by zero is infinite", {"/": [1, 0]}, {}, math.inf),
    ("/ negative by zero", {"/": [-1, 0]}, {}, -math.inf),
    ("/ zero by zero is NaN", {"/": [0, 0]}, {}, NAN),
    ("% remainder", {"%": [7, 3]}, {}, 1),
    ("% keeps the dividend's sign", {"%": [-7, 3]}, {}, -1),
    ("% by zero is NaN", {"%": [7, 0]}, {}, NAN),
    ("% of floats", {"%": [7.5, 2]}, {}, 1.5),
    ("% of infinity is NaN", {"%": [{"/": [1, 0]}, 2]}, {}, NAN),
    ("hex string is a number", {"+": [{"-": ["0x10", 0]}, 0]}, {}, 16),
    ("blank string is zero", {"-": [" ", 0]}, {}, 0),
    # in
    ("in substring", {"in": ["Spring", "Springfield"]}, {}, True),
    ("in not a substring", {"in": ["Illinois", "Springfield"]}, {}, False),
    ("in number in string", {"in": [1, "a1"]}, {}, True),
    ("in empty string", {"in": ["", ""]}, {}, False),
    ("in array", {"in": ["Mike", ["Bob", "Mike"]]}, {}, True),
    ("in array is strict", {"in": ["1", [1, 2]]}, {}, False),
    ("in array of numbers", {"in": [2.0, [1, 2]]}, {}, True),
    ("in neither string nor array", {"in": ["a", None]}, {}, False),
    ("in strings takes only a string", {"in": [1, ["1", "2"]]}, {}, False),
    ("in strings takes no array", {"in": [["a"], ["a"]]}, {}, False),
    ("in strings with a var", {"in": [{"var": "s"}, ["x", "abc"]]}, DATA, True),
    ("in strings with a missing var", {"in": [{"var": "nope"}, ["x", "abc"]]}, DATA, False),
    ("in no strings", {"in": [{"var": "s"}, []]}, DATA, False),
    ("in mixed array", {"in": [{"var": "a"}, ["1", 1]]}, DATA, True),
    # strings
    ("cat", {"cat": ["I love ", "pie", 2, True, None]}, {}, "I love pie2true"),
    ("cat of floats and arrays", {"cat": [1.5, 2.0, [1, [2, 3]]]}, {}, "1.521,2,3"),
    ("cat of one", {"cat": "x"}, {}, "x"),
    ("substr from", {"substr": ["jsonlogic", 4]}, {}, "logic"),
    ("substr from the end", {"substr": ["jsonlogic", -5]}, {}, "logic"),
    ("substr with length", {"substr": ["jsonlogic", 1, 3]}, {}, "son"),
    ("substr dropping the end", {"substr": ["jsonlogic", 4, -2]}, {}, "log"),
    ("substr of a number", {"substr": [12345, 1, 2]}, {}, "23"),
    ("substr start past the end", {"substr": ["abc", 10]}, {}, ""),
    ("substr negative start past the beginning", {"substr": ["abc", -10, 2]}, {}, "ab"),
    ("substr null length is empty", {"substr": ["abc", 0, None]}, {}, ""),
    # arrays
    ("merge flattens one level", {"merge": [[1, 2], 3, [[4]]]}, {}, [1, 2, 3, [4]]),
    ("merge nothing", {"merge": []}, {}, []),
    ("map", {"map": [{"var": "list"}, {"*": [{"var": ""}, 2]}]}, DATA, [20, 40, 60]),
    ("map over non-array", {"map": [{"var": "a"}, {"var": ""}]}, DATA, []),
    ("filter", {"filter": [{"var": "list"}, {">": [{"var": ""}, 15]}]}, DATA, [20, 30]),
    (
        "reduce",
        {"reduce": [{"var": "list"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]},
        DATA,
        60,
    ),
    ("reduce without initial", {"reduce": [[1], {"var": "accumulator"}]}, {}, None),
    ("reduce over non-array", {"reduce": [None, {"var": "current"}, 5]}, {}, 5),
    ("all", {"all": [[1, 2, 3], {">": [{"var": ""}, 0]}]}, {}, True),
    ("all with a failure", {"all": [[1, -2], {">": [{"var": ""}, 0]}]}, {}, False),
    ("all of empty", {"all": [[], True]}, {}, False),
    ("none", {"none": [[1, 2], {"<": [{"var": ""}, 0]}]}, {}, True),
    ("none with a match", {"none": [[1, -2], {"<": [{"var": ""}, 0]}]}, {}, False),
    ("some", {"some": [{"var": "user.tags"}, {"==": [{"var": ""}, "y"]}]}, DATA, True),
    ("some of empty", {"some": [[], True]}, {}, False),
    # data that is not logic
    ("object with two keys is data", {"a": 1, "b": 2}, {}, {"a": 1, "b": 2}),
    ("empty object is data", {}, {}, {}),
    ("array elements are evaluated", [{"var": "a"}, 2], DATA, [1, 2]),
    ("scalar", "plain", {}, "plain"),
]


@pytest.mark.parametrize(
    ("logic", "data", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_operation(logic: Any, data: Any, expected: Any) -> None:
    result = apply(logic, data)
    if expected is NAN:
        assert isinstance(result, float) and math.isnan(result)
    else:
        assert result == expected
        assert isinstance(result, bool) is isinstance(expected, bool)  # True == 1 in Python only


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], False),
        ([0], True),
        ({}, True),
        ("", False),
        ("0", True),
        (0, False),
        (0.0, False),
        (-1, True),
        (math.nan, False),
        (None, False),
        (False, False),
        (True, True),
    ],
)
def test_truthy(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


@pytest.mark.parametrize(("logic", "data"), [case[1:3] for case in CASES], ids=[case[0] for case in CASES])
def test_a_compiled_rule_gives_the_same_result_every_time(logic: Any, data: Any) -> None:
    rule = compile_logic(logic)
    assert repr(rule(data, None)) == repr(rule(data, None)) == repr(apply(logic, data))


def test_a_compiled_rule_reads_the_data_of_each_call() -> None:
    rule = compile_logic({"if": [{"in": [{"var": "region"}, ["eu", "us"]]}, {"var": "user.name"}, "none"]})
    assert rule({"region": "eu", "user": {"name": "ada"}}, None) == "ada"
    assert rule({"region": "ap", "user": {"name": "ada"}}, None) == "none"
    assert rule({"region": "us", "user": {"name": "bob"}}, None) == "bob"


def test_an_overridden_builtin_is_used_as_given() -> None:
    seen: list[Any] = []

    def contains(args: list[Any], _data: Any, _scratch: Any) -> str:
        seen.append(args)
        return "custom"

    operations = {**jsonlogic.OPERATIONS, "in": contains}
    assert apply({"in": [{"var": "s"}, ["abc"]]}, DATA, operations) == "custom"
    assert seen == [["abc", ["abc"]]]


@pytest.mark.parametrize(("logic", "expected"), [({"twice": [21]}, "special"), ({"twice": ["x"]}, "xx")])
def test_a_specializable_operation_falls_back_to_its_general_way(logic: Any, expected: Any) -> None:
    def specialize(args: list[Any], _operations: Any) -> Any:
        return (lambda _data, _scratch: "special") if args == [21] else None

    twice = Specializable(lambda args, _data, _scratch: args[0] * 2, specialize)
    assert apply(logic, {}, {**jsonlogic.OPERATIONS, "twice": twice}) == expected


def test_unknown_operation_is_refused() -> None:
    with pytest.raises(UnknownOperation, match="nope"):
        apply({"nope": [1]}, {})


def test_check_finds_unknown_operations_in_branches_that_would_not_run() -> None:
    logic = {"if": [True, "fine", {"map": [[1], {"nope": []}]}]}
    assert apply(logic, {}) == "fine"
    with pytest.raises(UnknownOperation, match="nope"):
        check(logic)


def test_check_accepts_known_operations_and_data_objects() -> None:
    check({"and": [{"==": [{"var": "a"}, 1]}, {"in": ["x", {"x": 1, "y": 2}]}]})


def test_custom_operations_get_evaluated_arguments_the_data_and_the_scratch() -> None:
    seen: list[Any] = []

    def record(args: list[Any], data: Any, scratch: Any) -> str:
        seen.append((args, data, scratch))
        return "ok"

    operations = {**jsonlogic.OPERATIONS, "record": record}
    scratch = object()
    assert apply({"record": [{"var": "a"}, [{"var": "a"}]]}, {"a": 1}, operations, scratch) == "ok"
    assert seen == [([1, [1]], {"a": 1}, scratch)]


def test_a_failing_custom_operation_reaches_the_caller() -> None:
    def fail(_args: list[Any], _data: Any, _scratch: Any) -> None:
        raise OperationFailed("bad input")

    with pytest.raises(OperationFailed, match="bad input"):
        apply({"if": [{"fail": []}, 1, 2]}, {}, {**jsonlogic.OPERATIONS, "fail": fail})
