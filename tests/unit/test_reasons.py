"""The catalogue of reasons (reconciler/reasons.py) is the only place a reason is spelled: every
reason the code reports is a constant of it, every constant is reported somewhere, each error is
raised with the class that says the reason's next step, README's table is rendered from it; and
what the classes promise: Interrupted is retried within the fetch, NeedsOperator stops the agent
and the CLI exits 2, add_context keeps the error."""

from __future__ import annotations

import ast
import importlib
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from reconciler import reasons
from reconciler.agent.apply import Applier
from reconciler.agent.loop import Agent, ReconcileResult
from reconciler.agent.statedir import StateDir
from reconciler.delivery.plan import Action, Plan, Unplannable
from reconciler.devtools.reasons_table import README, render_table, table_in
from reconciler.errors import Cancelled, Interrupted, NeedsOperator, ReconcilerError, Stalled, Transient
from reconciler.ingest.fetch import Deadline, FetchLimits, with_retries
from reconciler.reasons import CATALOGUE, RETIRED, Next
from reconciler.runtime.validation import ModelRefused, Problem
from reconciler.trust import TrustRoots

PACKAGE = Path(reasons.__file__).resolve().parent
cli = importlib.import_module("reconciler.cli.main")  # the module: reconciler.cli.main is also its function
ERRORS = {cls.__name__: cls for cls in (ReconcilerError, Transient, Interrupted, Cancelled, Stalled, NeedsOperator,
                                        Unplannable, ModelRefused)}
GIT_FAILURES = {"git_failure", "describe_git_failure"}  # gitdoor/source.py: they build a Transient
CAMEL_CASE = re.compile(r"^[A-Z][a-z]+(?:[A-Z][a-z0-9]*)+$")
# CamelCase strings that are no reasons: names of classes, ONNX operators, selector operators, units.
NOT_REASONS = {"AuditTrail", "FleetAt", "SiteStatus", "DequantizeLinear", "MatMul", "DoesNotExist", "NotIn",
               "KiB", "MiB", "NaN", "ReferenceProfile", "PartiallySucceeded", "ModelInferRequest", "ModelInferResponse",
               "ServerLiveResponse", "ServerReadyResponse", "ServerMetadataResponse", "ModelReadyResponse",
               "ModelMetadataResponse", "AzureExecutionProvider", "SignedEntryTimestamp"}


def modules(*leave_out: str) -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(PACKAGE.rglob("*.py"))
            if path.name not in leave_out]


def named_reasons(tree: ast.Module) -> list[ast.Attribute]:
    """Every ``reasons.X`` (or ``R.X``, as evidence.py imports it) of the tree."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in ("reasons", "R")]


def declared_names(tree: ast.Module) -> set[int]:
    """The ids of the strings in ``__all__`` lists: names, not reasons."""
    return {id(element) for node in ast.walk(tree) if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
            for element in ast.walk(node.value)}


def test_the_readme_table_is_the_rendered_catalogue():
    assert table_in(README.read_text()) == render_table(), "run python -m reconciler.devtools.reasons_table"


def test_each_constant_is_named_as_its_value():
    assert all(getattr(reasons, name) == name == entry.reason for name, entry in CATALOGUE.items())
    assert set(RETIRED.values()) <= set(CATALOGUE) and not set(RETIRED) & set(CATALOGUE)


def test_no_reason_is_spelled_outside_the_catalogue():
    """A reason as a string literal (a new one, or a catalogued one not written as its constant)."""
    spelled = []
    for path, tree in modules("reasons.py"):
        names = declared_names(tree)
        parts_of_fstrings = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in names | parts_of_fstrings:
                continue
            value = node.value
            if value in CATALOGUE or value in RETIRED or (CAMEL_CASE.match(value) and value not in NOT_REASONS):
                spelled.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {value!r}")
    assert spelled == []


def test_every_named_reason_is_catalogued_and_every_entry_is_reported():
    named = {node.attr for _, tree in modules("reasons.py") for node in named_reasons(tree)}
    helpers = {"CATALOGUE", "RETIRED", "Next", "Entry"}
    assert named - helpers - set(CATALOGUE) == set()
    reported = {node.attr for _, tree in modules("reasons.py", "reasons_table.py", "evidence.py")
                for node in named_reasons(tree)}
    assert set(CATALOGUE) - reported == set(), "catalogued, but reported nowhere"


def raise_sites() -> list[tuple[str, str, str]]:
    """(where, class or helper, reason) for each error built with a catalogued reason."""
    sites = []
    for path, tree in modules("reasons.py"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ERRORS.keys() | GIT_FAILURES:
                for arg in named_reasons(ast.Module(body=[ast.Expr(a) for a in node.args], type_ignores=[])):
                    sites.append((f"{path.name}:{node.lineno}", node.func.id, arg.attr))
    return sites


def test_each_error_is_raised_with_the_class_of_its_next_step():
    sites = raise_sites()
    assert len(sites) > 150
    wrong = [site for site in sites if not CATALOGUE[site[2]].raised or CATALOGUE[site[2]].next is not (
        Next.RETRY_NEXT_TICK if site[1] in GIT_FAILURES else ERRORS[site[1]].next)]
    assert wrong == []


def test_each_failure_has_one_class_and_the_outcomes_none():
    classes: dict[str, set[str]] = {}
    for _, helper, reason in raise_sites():
        classes.setdefault(reason, set()).add("Transient" if helper in GIT_FAILURES else helper)
    mixed = {r: c for r, c in classes.items() if len(c - {"ModelRefused", "Unplannable"}) > 1}
    assert mixed == {}


def test_add_context_keeps_the_class_and_what_a_subclass_carries():
    problems = (Problem(("inputs", 0, "dtype"), "float32 expected"),)
    error = ModelRefused(reasons.ModelInterfaceMismatch, "float32 expected", problems)
    said = error.add_context("churn 1.1.0")
    assert (type(said), said.reason, said.problems) == (ModelRefused, "ModelInterfaceMismatch", problems)
    assert str(said) == "ModelInterfaceMismatch: churn 1.1.0: float32 expected"
    assert said.message == "churn 1.1.0: float32 expected"
    assert error.message == "float32 expected"  # a copy: the same error met twice is not prefixed twice


def test_unplannable_is_a_stalled_error():
    error = Unplannable(reasons.ModelNotFound, "no model")
    assert isinstance(error, Stalled) and error.next is Next.WAIT_FOR_CHANGE and not error.retry


@pytest.mark.parametrize("error, attempts", [
    (Interrupted(reasons.ArtifactTruncated, "cut"), 3),  # tried again within the fetch, up to fetch.retries
    (Transient(reasons.DiskFull, "full"), 1),  # the next tick
    (Stalled(reasons.ArtifactNotFound, "404"), 1),  # a change
])
def test_only_an_interrupted_transfer_is_tried_again_at_once(error, attempts):
    calls = []

    def attempt():
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        with_retries(FetchLimits(retries=3, backoff=0.001), Deadline(30, "https://h/m"), attempt)
    assert len(calls) == attempts


def test_an_interrupted_transfer_that_recovers_is_fetched():
    answers = iter([Interrupted(reasons.ArtifactUnavailable, "503"), "bytes"])

    def attempt():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert with_retries(FetchLimits(retries=3, backoff=0.001), Deadline(30, "https://h/m"), attempt) == "bytes"


def test_needs_operator_is_not_swallowed_into_an_outcome(tmp_path):
    """No runtime (no --listen) for a running canary: apply raises it, for the agent to stop."""
    applier = Applier(StateDir(tmp_path), None, TrustRoots())
    canary = Action("canary", "churn", "churn", "1.0.0", SimpleNamespace(deployment="churn", model="churn", version="1.1.0"),  # type: ignore[arg-type]
                    reasons.CanaryInProgress, "")
    with pytest.raises(NeedsOperator) as raised:
        applier.apply(Plan("store-1", None, (canary,), ()), None, None, datetime(2026, 1, 1, tzinfo=UTC))  # type: ignore[arg-type]
    assert raised.value.reason == "RuntimeNotServing" and raised.value.message.startswith("churn 1.1.0: ")


def test_the_agent_stops_on_an_error_that_needs_an_operator():
    error = NeedsOperator(reasons.RuntimeNotServing, "start with --listen")
    results = iter([ReconcileResult(None, error=error)])
    agent = SimpleNamespace(config=SimpleNamespace(interval_seconds=60, jitter=0, site="store-1"),
                            wake=SimpleNamespace(clear=lambda: None, wait=lambda _: pytest.fail("waited")),
                            reconcile_once=lambda: next(results))
    with pytest.raises(NeedsOperator):
        Agent.run(agent, SimpleNamespace(is_set=lambda: False))  # type: ignore[arg-type]


def test_the_cli_exits_2_with_the_reason_when_an_operator_is_needed(monkeypatch, capsys, tmp_path):
    def refuse(args):
        raise NeedsOperator(reasons.ListenFailed, "cannot listen on 127.0.0.1:80: Permission denied")

    monkeypatch.setattr(cli, "cmd_validate", refuse)
    assert cli.main(["validate", str(tmp_path)]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == "reconciler: ListenFailed: cannot listen on 127.0.0.1:80: Permission denied\n"
