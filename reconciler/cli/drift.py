"""`reconciler profile DATA... --model NAME --version V`: a model version's reference profile from
its training data (reconciler.monitoring.profile), and `reconciler status --drift`: the fleet's
drift from the sites' records, with the pooled drift per version (profiles read from the fleet repo).

DATA is any mix of:
- ``TENSOR=FILE.npy`` (or ``FILE.npy`` for a model with one input): a [rows] or [rows, k] array;
- ``FILE.csv``: a header naming columns ``TENSOR`` or ``TENSOR[i]``, one row per example;
- ``FILE.jsonl``: one object per line, tensor name to a number or a list of numbers.
Tensors are inputs or outputs by the Model's interface in the fleet repo. Outputs missing from the
data come from running ``--onnx`` on the inputs, so prediction drift has a reference too."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from reconciler import reasons
from reconciler.errors import ReconcilerError, Stalled, UsageError
from reconciler.history.timeline import OpenFleet
from reconciler.ingest.artifacts import fetch_bytes
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.loader import load_directory
from reconciler.manifests.models import ModelInterface
from reconciler.monitoring.profile import DEFAULT_BINS, Profile, build_profile
from reconciler.monitoring.tables import SUFFIXES, read_tensors
from reconciler.status.drift_view import pooled, render_text, site_drifts, to_json
from reconciler.status.record import StatusRecord

ONNX_BATCH_ROWS = 4096
PROFILE_MAX_BYTES = 4 << 20


def add_subcommands(commands: argparse._SubParsersAction) -> None:
    profile = commands.add_parser("profile", help="a model version's reference profile for drift monitoring, "
                                                  "from training data (.npy, CSV, JSON Lines)")
    profile.add_argument("data", nargs="+", help="TENSOR=FILE.npy, FILE.npy (one-input models), FILE.csv or FILE.jsonl")
    profile.add_argument("--model", required=True, help="the Model's name in the fleet repo (its interface names "
                                                         "the tensors)")
    profile.add_argument("--version", required=True, help="the version the profile is for")
    profile.add_argument("--repo", type=Path, default=Path("."), help="the fleet repo's working tree (default: .)")
    profile.add_argument("--onnx", type=Path, help="run this ONNX file on the inputs for outputs the data lacks")
    profile.add_argument("--bins", type=int, default=DEFAULT_BINS, help="quantile bins per numeric feature "
                                                                          f"(default {DEFAULT_BINS}: deciles)")
    profile.add_argument("-o", "--output", type=Path, default=Path("profile.json"))
    profile.set_defaults(handler=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    if not 1 <= args.bins <= 100:
        raise UsageError(f"--bins must be 1-100, got {args.bins}")
    interface = _interface(load_directory(args.repo).repo, args.model)
    tensors: dict[str, np.ndarray] = {}
    for item in args.data:
        for name, array in read_data(item, interface).items():
            if name in tensors:
                raise UsageError(f"tensor {name} is given twice")
            tensors[name] = array
    columns = split_roles(tensors, interface, args.onnx)
    try:
        profile = build_profile(args.model, args.version, columns, bins=args.bins)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    content = (profile.model_dump_json(indent=1) + "\n").encode()
    args.output.write_bytes(content)
    print(f"{args.output}: {len(profile.features())} features over {profile.rows} rows\n"
          f"# in the version's entry of the Model (sign it like the artifact, e.g. in one model_signing bundle):\n"
          f"profile:\n  uri: {args.output.as_posix()}\n  digest: sha256:{hashlib.sha256(content).hexdigest()}\n"
          f"  size: {len(content)}\n  signature:\n    uri: SIGNATURE")
    return 0


def read_data(item: str, interface: ModelInterface) -> dict[str, np.ndarray]:
    name, _, file = item.rpartition("=") if "=" in item else ("", "", item)
    path = Path(file)
    dtypes = {t.name: np.dtype(t.dtype) for t in (*interface.inputs, *interface.outputs)}
    if path.suffix == ".npy" and not name:
        if len(interface.inputs) != 1:
            raise UsageError(f"{file}: name the tensor it holds, as TENSOR={file}")
        name = interface.inputs[0].name
    if path.suffix not in SUFFIXES:
        raise UsageError(f"{file}: give .npy, .csv or .jsonl data")
    try:
        return read_tensors(path.read_bytes(), path.suffix, dtypes, name or None)
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{file}: {exc}") from None


def split_roles(tensors: dict[str, np.ndarray], interface: ModelInterface,
                onnx: Path | None) -> dict[str, dict[str, np.ndarray]]:
    inputs = {t.name: tensors.pop(t.name) for t in interface.inputs if t.name in tensors}
    outputs = {t.name: tensors.pop(t.name) for t in interface.outputs if t.name in tensors}
    if tensors:
        raise UsageError(f"the model has no tensor named {', '.join(sorted(tensors))}")
    missing = [t.name for t in interface.outputs if t.name not in outputs]
    if onnx is not None and missing:
        outputs |= _run_model(onnx, inputs, interface, missing)
    return {"inputs": inputs, "outputs": outputs}


def _interface(fleet: FleetRepo, model: str) -> ModelInterface:
    found = fleet.models.get(model)
    if found is None:
        raise UsageError(f"no Model named {model!r} in the fleet repo (give it with --repo)")
    return found.spec.interface


def _run_model(onnx: Path, inputs: dict[str, np.ndarray], interface: ModelInterface,
               names: list[str]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(onnx.read_bytes(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors share no narrower base class
        raise Stalled(reasons.ModelLoadFailed, f"{onnx} does not load as an ONNX model: {exc}") from None
    rows = len(next(iter(inputs.values())))
    batches = [session.run(names, {k: v[start:start + ONNX_BATCH_ROWS] for k, v in inputs.items()})
               for start in range(0, rows, ONNX_BATCH_ROWS)]
    return {name: np.concatenate([batch[i] for batch in batches]) for i, name in enumerate(names)}


def status_drift(fleet: FleetRepo, opened: OpenFleet, records: Mapping[str, StatusRecord], output_format: str) -> str:
    """`reconciler status --drift`; profiles are read from the fleet repo's head (repo-relative URIs)."""
    tree = opened.source.tree(opened.head)

    def read(uri: str) -> bytes:
        return fetch_bytes(uri, tree, max_bytes=PROFILE_MAX_BYTES)

    drifts = site_drifts(records)
    profiles = {}
    for model in fleet.models.values():
        for version in model.spec.versions:
            if version.profile is not None and version.profile.digest in {d.summary.profile for d in drifts}:
                profiles[version.profile.digest] = _profile_at(read, version.profile.uri, version.profile.digest)
    pools = pooled(drifts, {k: v for k, v in profiles.items() if v is not None})
    return json.dumps(to_json(drifts, pools), indent=2) if output_format == "json" else render_text(drifts, pools)


def _profile_at(read: Callable[[str], bytes], uri: str, digest: str) -> Profile | None:
    """The profile the manifest pins, or None (not readable here, or not the pinned bytes)."""
    try:
        content = read(uri)
    except ReconcilerError:  # an http(s) profile out of reach: that version is shown per site, not pooled
        return None
    if f"sha256:{hashlib.sha256(content).hexdigest()}" != digest:
        return None
    return Profile.model_validate_json(content)
