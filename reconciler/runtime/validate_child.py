"""The throwaway process that loads a candidate model and runs its validation cases.

Started by reconciler.runtime.validation as a script (``python -I validate_child.py``), so it
imports nothing of reconciler: a request comes as one JSON document on stdin, the answer goes back
as one JSON line on stdout. Memory, CPU and core-dump limits are set before numpy or onnxruntime
load, so a hostile or broken model can only hurt this process.

Request:  {"model": path, "providers": [execution provider], "memoryLimit": bytes, "cpuSeconds": n,
           "interface": {"inputs": [TensorSpec], "outputs": [TensorSpec]}, "cases": [ValidationCase],
           "evaluation": null | {"feeds": .npz path, "output": name, "predictions": .npy path, "rows": n}}
Answer:   {"outcome": "noProvider", "available": [execution provider]}
        | {"outcome": "loadFailed", "message": str}
        | {"outcome": "interfaceMismatch", "problems": [{"at": [part], "message": str}]}
        | {"outcome": "ran", "provider": str,
           "cases": [{"name", "passed", "maxAbsError", "detail", "at": [part]}],
           "evaluation": null | {"scored": rows} | {"failed": str}}
With "evaluation" the child also runs the model over a site's labeled examples (federated
evaluation: the inputs of the .npz, ``rows`` at a time) and saves the scored output's values to
"predictions"; the labels never come here, the agent scores the values (monitoring/evaluation.py).
"at" is where the fault lies: in the interface (e.g. ["inputs", 0, "dtype"]) or in the case
(e.g. ["expected", "y"]), so a check before the merge can point at the manifest's line.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from typing import Any

ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}
_NUMPY_DTYPES = {"string": object}  # onnxruntime takes string tensors as numpy arrays of str objects


def main() -> int:
    request = json.load(sys.stdin)
    _limit_resources(request["memoryLimit"], request["cpuSeconds"])
    answer_fd = _set_stdout_aside()
    answer = _validate(request)
    os.write(answer_fd, (json.dumps(answer) + "\n").encode())
    return 0


def _limit_resources(memory: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # A backstop if the parent dies and cannot kill us: the kernel does after cpu_seconds.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # One thread each: thread stacks count against RLIMIT_AS, and validation cases are tiny.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"


def _set_stdout_aside() -> int:
    """Native code may print to fd 1; point fd 1 at stderr so only the answer reaches the parent."""
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    return answer_fd


def _validate(request: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 2  # its warnings go to stderr, which the agent logs as its own
    # The site's providers that this onnxruntime has, in the site's order: what serving uses too.
    available = ort.get_available_providers()
    providers = [name for name in request["providers"] if name in available]
    if not providers:
        return {"outcome": "noProvider", "available": available}
    if request.get("externalData"):
        # The hashed bytes load; their external data only from the model's directory of verified files.
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", request["externalData"])
    try:
        with open(request["model"], "rb") as model:
            # From bytes, not from a path: no external data but from the folder named above.
            session = ort.InferenceSession(model.read(), options, providers=providers)
    except Exception as exc:  # onnxruntime has its own exception types for every way loading fails
        return {"outcome": "loadFailed", "message": _describe(exc)}
    interface = request["interface"]
    problems = _interface_problems(session, interface)
    if problems:
        return {"outcome": "interfaceMismatch", "problems": problems}
    return {"outcome": "ran", "provider": session.get_providers()[0],
            "cases": [_run_case(session, interface, case) for case in request["cases"]],
            "evaluation": _predict(session, request["evaluation"]) if request.get("evaluation") else None}


def _predict(session: Any, evaluation: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    try:
        with np.load(evaluation["feeds"], allow_pickle=False) as archive:
            feeds = {name: archive[name] for name in archive.files}
        rows = len(next(iter(feeds.values())))
        step = evaluation["rows"]
        parts = [session.run([evaluation["output"]], {name: array[start:start + step] for name, array in feeds.items()})[0]
                 for start in range(0, rows, step)]
        np.save(evaluation["predictions"], np.concatenate(parts), allow_pickle=False)
    except Exception as exc:  # onnxruntime refusing the data (a shape, a value): the scoring fails, said why
        return {"failed": _describe(exc)}
    return {"scored": rows}


def _interface_problems(session: Any, interface: dict[str, Any]) -> list[dict[str, Any]]:
    problems = _compare("input", interface["inputs"], session.get_inputs())
    problems += _compare("output", interface["outputs"], session.get_outputs())
    declared = {spec["name"] for spec in interface["inputs"]}
    problems += [
        _problem(["inputs"], f"model input '{arg.name}' is not in the interface")
        for arg in session.get_inputs() if arg.name not in declared
    ]
    return problems


def _compare(kind: str, specs: list[dict[str, Any]], args: list[Any]) -> list[dict[str, Any]]:
    by_name = {arg.name: arg for arg in args}
    problems = []
    for index, spec in enumerate(specs):
        at = [f"{kind}s", index]
        arg = by_name.get(spec["name"])
        if arg is None:
            problems.append(_problem([*at, "name"], f"{kind} '{spec['name']}' is not in the model "
                                                    f"(it has {', '.join(sorted(by_name))})"))
            continue
        dtype = ORT_DTYPES.get(arg.type, arg.type)
        if dtype != spec["dtype"]:
            problems.append(_problem([*at, "dtype"], f"{kind} '{spec['name']}': dtype {spec['dtype']} expected, "
                                                     f"model has {dtype}"))
        if not _shape_fits(kind, spec["shape"], arg.shape):
            problems.append(_problem([*at, "shape"], f"{kind} '{spec['name']}': shape {spec['shape']} expected, "
                                                     f"model has {arg.shape}"))
    return problems


def _problem(at: list[Any], message: str) -> dict[str, Any]:
    return {"at": at, "message": message}


def _shape_fits(kind: str, declared: list[int], actual: list[int | str | None] | None) -> bool:
    """-1 in the interface promises any size; a symbolic model dimension accepts any size. An input
    the interface calls dynamic must be dynamic in the model too, or requests of other sizes fail."""
    if actual is None:
        return True
    if len(declared) != len(actual):
        return False
    for want, have in zip(declared, actual, strict=True):
        fixed = isinstance(have, int) and have >= 0
        if fixed and want != -1 and want != have:
            return False
        if fixed and want == -1 and kind == "input":
            return False
    return True


def _run_case(session: Any, interface: dict[str, Any], case: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    dtypes = {spec["name"]: spec["dtype"] for spec in interface["inputs"]}
    outputs = {spec["name"] for spec in interface["outputs"]}
    missing = sorted(set(dtypes) - set(case["inputs"]))
    unknown = sorted(set(case["inputs"]) - set(dtypes)) + sorted(set(case["expected"]) - outputs)
    if missing or unknown:
        problems = [_problem(["inputs"], f"no value for input '{name}'") for name in missing]
        problems += [_problem(["inputs" if name in case["inputs"] else "expected", name],
                              f"'{name}' is not in the interface") for name in unknown]
        return _result(case, math.inf, problems)
    try:
        feeds = {name: np.asarray(value, dtype=_NUMPY_DTYPES.get(dtypes[name], dtypes[name]))
                 for name, value in case["inputs"].items()}
        names = list(case["expected"])
        got = dict(zip(names, session.run(names, feeds), strict=True))
    except Exception as exc:  # bad case data or onnxruntime refusing the run: the case fails
        return _result(case, math.inf, [_problem(["inputs"], f"inference failed: {_describe(exc)}")])
    worst, problems = 0.0, []
    for name, expected in case["expected"].items():
        error, problem = _difference(name, got[name], expected, case["tolerance"])
        worst = error if math.isnan(error) or error > worst else worst
        problems += [_problem(["expected", name], problem)] if problem else []
    return _result(case, worst, problems)


def _difference(name: str, got: Any, expected: Any, tolerance: float) -> tuple[float, str | None]:
    import numpy as np

    if np.asarray(got).dtype.kind == "O":  # a string tensor: its text must be exactly what is expected
        have_text, want_text = np.asarray(got).tolist(), np.asarray(expected, dtype=object).tolist()
        return (0.0, None) if have_text == want_text else (math.inf, f"output '{name}' is {have_text!r}, "
                                                                      f"expected {want_text!r}")
    try:
        want = np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):
        return math.inf, f"expected value of output '{name}' is not numeric"
    have = np.asarray(got, dtype=np.float64)
    if have.shape != want.shape:
        return math.inf, f"output '{name}' has shape {list(have.shape)}, expected {list(want.shape)}"
    error = float(np.max(np.abs(have - want))) if have.size else 0.0
    if np.allclose(have, want, atol=tolerance, rtol=0):
        return error, None
    return error, f"output '{name}' differs by {error:.3g} > tolerance {tolerance:g}"


def _result(case: dict[str, Any], worst: float, problems: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": case["name"], "passed": not problems, "maxAbsError": worst,
            "detail": "; ".join(p["message"] for p in problems), "at": problems[0]["at"] if problems else []}


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("[ONNXRuntimeError]"):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
