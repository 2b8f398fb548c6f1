"""Validation of a candidate model before activation, in a child process.

The agent never opens an onnxruntime session of an unvalidated model itself: a child process
(validate_child.py) with its own memory and CPU limits loads the model from the verified blob's
bytes, checks it against the Model's interface and runs the version's validation cases. Whatever the
model does to that child — crash, exhaust memory, hang — comes back here as a Stalled error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reconciler import reasons
from reconciler.cancel import CancelToken
from reconciler.errors import Stalled
from reconciler.manifests.models import MAIN_FILE, ModelInterface, ValidationCase
from reconciler.runtime.providers import CPU, no_provider

# onnxruntime's option for where a model loaded from bytes finds its external data.
EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"
_DIGEST_HEX = re.compile(r"^[0-9a-f]{64}$")
CHILD = Path(__file__).with_name("validate_child.py")
MESSAGE_LIMIT = 1000
# Each child's working directory: "<prefix><agent pid>-<random>", so a later agent can tell the
# ones a killed agent left (reconciler/selfheal.py) from those of agents still running.
WORKDIR_PREFIX = "reconciler-validate-"
STDERR_TAIL = 1000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# onnxruntime's own log line: "<date> <time> [W:onnxruntime:<logid>, <file:line> <function>] <message>"
_ORT_LOG_LINE = re.compile(r"\[[VIWEF]:onnxruntime:[^\]]*\]\s*(.*)")
POLL_SECONDS = 0.1  # how often the wait on the child looks at the agent's stop
# Lower-case fragments of onnxruntime's and Python's messages, matched case-insensitively.
_EXTERNAL_DATA = ("external data", "model_path must not be empty")
_UNKNOWN_OP = ("not a registered function/op", "no opset import for domain", "could not find an implementation")
_OUT_OF_MEMORY = ("memoryerror", "bad_alloc", "failed to allocate", "cannot allocate memory")


@dataclass(frozen=True)
class CaseResult:
    name: str
    passed: bool
    max_abs_error: float  # inf when outputs could not be compared at all
    detail: str = ""  # why it failed
    at: tuple[str | int, ...] = ()  # where in the case it failed, e.g. ("expected", "y")


@dataclass(frozen=True)
class Problem:
    """One fault the child found: in the Model's interface (``case`` None; ``at`` e.g.
    ("inputs", 0, "dtype")) or in the version's validation case number ``case``."""

    at: tuple[str | int, ...]
    message: str
    case: int | None = None


class ModelRefused(Stalled):
    """The model does not fit its interface or fails its cases; ``problems`` say where, for a
    check before the merge that points at the manifest's lines."""

    def __init__(self, reason: str, message: str, problems: Sequence[Problem] = ()):
        super().__init__(reason, message)
        self.problems = tuple(problems)


@dataclass(frozen=True)
class EvaluationFeeds:
    """A site's labeled examples without their labels: what the child runs the model over."""

    feeds: dict[str, np.ndarray]  # every interface input, one row per example
    output: str  # the output whose values come back
    rows: int = 1024  # examples per run


@dataclass(frozen=True)
class ValidationReport:
    cases: list[CaseResult]
    seconds: float
    warnings: tuple[str, ...] = ()  # what onnxruntime said while loading and running the model
    provider: str = CPU  # the execution provider the cases ran on
    predictions: np.ndarray | None = None  # the output's values on the EvaluationFeeds, in their order


def external_data_folder(model_path: Path) -> Path | None:
    """The model directory a model with files loads from (``ArtifactStore.materialize``:
    ``models/<hex>/model.onnx``); None for a blob, which loads no external data at all."""
    directory = model_path.parent
    if model_path.name == MAIN_FILE and _DIGEST_HEX.match(directory.name) and directory.parent.name == "models":
        return directory
    return None


def run_validation(
    model_path: Path,
    interface: ModelInterface,
    cases: Sequence[ValidationCase],
    timeout: float = 30.0,
    memory_limit: int = 1 << 30,
    stop: CancelToken | None = None,
    providers: Sequence[str] = (CPU,),
    evaluation: EvaluationFeeds | None = None,
    external_data: Path | None = None,
) -> ValidationReport:
    """Load the model and run every case in a child process; a report only when all cases pass.
    A ``stop`` kills the child within POLL_SECONDS and raises Cancelled. ``providers``: the site's
    executionProviders, chosen as serving chooses them (providers.py), so a model is validated on
    what will serve it. With ``evaluation`` the same child, under the same limits, also runs the
    model over those examples: the report's ``predictions`` (EvaluationDataInvalid if it cannot).
    ``external_data``: where the model's external data is (default: its model directory, if it is in one)."""
    request = {
        "model": str(Path(model_path).resolve()),
        "externalData": str(folder) if (folder := external_data or external_data_folder(Path(model_path))) else None,
        "providers": list(providers),  # the child keeps those its onnxruntime has, as serving does
        "memoryLimit": memory_limit,
        "cpuSeconds": math.ceil(timeout) + 1,
        "interface": interface.model_dump(mode="json"),
        "cases": [case.model_dump(mode="json") for case in cases],
        "evaluation": None,
    }
    with tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-data-") as data:
        predictions = Path(data) / "predictions.npy"
        if evaluation is not None:
            np.savez(Path(data) / "feeds.npz", **evaluation.feeds)
            request["evaluation"] = {"feeds": str(Path(data) / "feeds.npz"), "output": evaluation.output,
                                     "predictions": str(predictions), "rows": evaluation.rows}
        started = time.monotonic()
        returncode, stdout, stderr = _run_child(request, timeout, stop or CancelToken())
        seconds = time.monotonic() - started
        answer = _answer(returncode, stdout)
        scored = np.load(predictions, allow_pickle=False) if predictions.exists() else None
    report = _report(answer, returncode, stderr, timeout, memory_limit, providers, seconds)
    if evaluation is None:
        return report
    if scored is None:
        why = _explain(_clean((answer.get("evaluation") or {}).get("failed") or "no output"), memory_limit)
        raise Stalled(reasons.EvaluationDataInvalid, f"the model cannot score the evaluation data: {why}"[:MESSAGE_LIMIT])
    return dataclasses.replace(report, predictions=scored)


def _report(answer: dict[str, Any] | None, returncode: int, stderr: bytes, timeout: float, memory_limit: int,
            providers: Sequence[str], seconds: float) -> ValidationReport:
    if answer is None:
        raise _crash(returncode, stderr, timeout, memory_limit)
    if answer["outcome"] == "noProvider":
        raise no_provider(providers, answer["available"])
    if answer["outcome"] == "loadFailed":
        raise Stalled(reasons.ModelLoadFailed, _explain(_clean(answer["message"])[:MESSAGE_LIMIT], memory_limit))
    if answer["outcome"] == "interfaceMismatch":
        problems = [Problem(tuple(p["at"]), p["message"]) for p in answer["problems"]]
        raise ModelRefused(reasons.ModelInterfaceMismatch, "; ".join(p.message for p in problems), problems)
    results = [
        CaseResult(c["name"], c["passed"], float(c["maxAbsError"]), c["detail"], tuple(c["at"])) for c in answer["cases"]
    ]
    failed = [Problem(r.at, f"case '{r.name}': {r.detail}", index) for index, r in enumerate(results) if not r.passed]
    if failed:
        message = _explain(_clean("; ".join(p.message for p in failed))[:MESSAGE_LIMIT], memory_limit)
        explained = [Problem(p.at, _explain(_clean(p.message), memory_limit), p.case) for p in failed]
        raise ModelRefused(reasons.ValidationFailed, message, explained)
    return ValidationReport(results, seconds, _warnings(stderr), answer["provider"])


def _run_child(request: dict[str, Any], timeout: float, stop: CancelToken) -> tuple[int, bytes, bytes]:
    # -I: no PYTHON* variables, no user site, no cwd on sys.path. An empty working directory:
    # nothing for a model's relative external-data path to find.
    with tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-") as workdir:
        child = subprocess.Popen(
            [sys.executable, "-I", str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            start_new_session=True,  # its own process group, killed as a whole
        )
        try:
            stdout, stderr = _wait_for(child, json.dumps(request).encode(), timeout, stop)
        finally:
            if child.returncode is None:
                _kill(child)
    return child.returncode, stdout, stderr


def _wait_for(child: subprocess.Popen[bytes], request: bytes, timeout: float, stop: CancelToken) -> tuple[bytes, bytes]:
    """The child's output once it exits; raises when it takes too long or the agent stops."""
    give_up = time.monotonic() + timeout
    sent: bytes | None = request  # communicate() takes the input once; later calls continue it
    while True:
        stop.check("validation")
        left = give_up - time.monotonic()
        if left <= 0:
            raise Stalled(reasons.ValidationTimeout, f"loading and validating the model took longer than {timeout:g} s")
        try:
            return child.communicate(sent, timeout=min(left, POLL_SECONDS))
        except subprocess.TimeoutExpired:
            sent = None


def _kill(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.communicate()


def _answer(returncode: int, stdout: bytes) -> dict[str, Any] | None:
    """The child's answer, if it finished cleanly and said one."""
    lines = stdout.strip().splitlines()
    if returncode != 0 or not lines:
        return None
    try:
        answer = json.loads(lines[-1])
    except ValueError:
        return None
    return answer if isinstance(answer, dict) and "outcome" in answer else None


def _crash(returncode: int, stderr: bytes, timeout: float, memory_limit: int) -> Stalled:
    if returncode == -signal.SIGXCPU:
        return Stalled(reasons.ValidationTimeout, f"the validation used more than {math.ceil(timeout) + 1} s of CPU")
    if returncode < 0:
        how = f"killed by {signal.Signals(-returncode).name}"
    else:
        how = f"exited with code {returncode} without an answer"
    tail = _clean(stderr.decode(errors="replace"))[-STDERR_TAIL:] or "no output"
    message = f"validation child {how} (memory limit {_mib(memory_limit)}): {tail}"
    return Stalled(reasons.ValidationCrashed, _explain(message, memory_limit))


def _explain(message: str, memory_limit: int) -> str:
    """onnxruntime's words, led by what they mean for the person who shipped the model."""
    lowered = message.lower()
    if "escapes model directory" in lowered:
        return f"the model's external data leaves the model's directory, which is refused: {message}"
    if any(needle in lowered for needle in _EXTERNAL_DATA):
        return (f"the model refers to external data files that are not among its version's files "
                f"(list each in the artifact's `files`): {message}")
    if any(needle in lowered for needle in _UNKNOWN_OP):
        return f"the model uses an operator onnxruntime does not provide (custom-op domains are refused): {message}"
    if any(needle in lowered for needle in _OUT_OF_MEMORY):
        return f"the model needs more than the validation memory limit of {_mib(memory_limit)}: {message}"
    return message


def _warnings(stderr: bytes) -> tuple[str, ...]:
    """The child's stderr of a clean run, line by line, onnxruntime's prefixes dropped."""
    lines = (_ANSI.sub("", line).strip() for line in stderr.decode(errors="replace").splitlines())
    return tuple(match[1] if (match := _ORT_LOG_LINE.search(line)) else line for line in lines if line)


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"


def _clean(text: str) -> str:
    return " ".join(_ANSI.sub("", text).split())
