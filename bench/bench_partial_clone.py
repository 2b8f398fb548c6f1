"""Models in Git cost what they weigh: a site's first reconcile fetches and keeps <= 0.25 x what a full fetch does.

The example fleet (without waves and canaries) on the git smart-HTTP server on 127.0.0.1, plus a
50 MiB model that store-boston-01 deploys and 200 MiB of models that only factories deploy. The
site's model is a real ONNX (a dense network from reconciler.devtools.onnx_builder), signed, with
validation cases, because a site validates what it deploys before it serves it: random bytes would
be refused there, and a benchmark that skipped the check would not measure a real deploy. The
other models are random bytes (signed, never validated: this site never reads them).

Each turn runs one real agent's first reconcile (``Agent.reconcile_once``, no inference server)
twice, each from an empty state directory, in its own process:
(a) baseline: the agent as it was before partial clones (commit BASELINE of this repository,
    extracted to a scratch directory): a full fetch of the branch and the whole tree extracted;
(b) subject: this checkout's agent: a ``--filter=blob:none`` fetch, then the blobs it reads.
Measured: the bytes the server sent (response bodies, counted by the server) and the disk the
state directory uses afterwards (cache, extracted tree, verified artifacts; allocated blocks).
Ratio = subject / baseline for bytes fetched; disk and time are printed beside it. The site's own
model is a fifth of the repository's bytes, so <= 0.25 (bytes and disk) says a site fetches and
keeps little beyond what it deploys. Bytes and disk
are the same in every turn but for a few KiB (the status record's exchange), so one turn is the
default; ``--repetitions N`` gives medians of the time over N turns (``--quick`` is the default).

    .venv/bin/python bench/bench_partial_clone.py [--quick] [--repetitions N]"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from common import ROOT, emit, machine  # first: puts the repo root on sys.path

from reconciler import trust
from reconciler.devtools.githttp import GitHttpServer, init_bare_repo, run_git
from reconciler.devtools.onnx_builder import dense_model, dense_reference
from reconciler.devtools.testing import EXAMPLE, copy_example
from reconciler.trust.signing import load_signing_key

BASELINE = "fda8d09dd037a1901281930a508094639269c091"  # main before partial clones: full fetch + extraction
TARGET = 0.25
SITE = "store-boston-01"
SITE_MODEL_BYTES = 50 << 20
OTHER_MODELS = 4
OTHER_MODEL_BYTES = 50 << 20
MODEL = "big-forecast"

DRIVER = """
import json, sys, time
from pathlib import Path
import reconciler
try:
    from reconciler.settings import SiteConfig
    from reconciler.agent.wiring import build_agent
except ImportError:  # the baseline's flat layout, whose Agent built its own collaborators (trustKeys: an alias now)
    from reconciler.config import SiteConfig
    from reconciler.loop import Agent as build_agent
url, site, state, key = sys.argv[1:5]
agent = build_agent(SiteConfig(site=site, repo=url, state=Path(state), trustKeys=[Path(key)]), None)
agent.start()
started = time.perf_counter()
try:
    result = agent.reconcile_once()
finally:
    agent.stop()
seconds = time.perf_counter() - started
status = result.record.deployments.get(sys.argv[5]) if result.record else None
print(json.dumps({"code": reconciler.__file__, "seconds": seconds, "error": str(result.error or ""),
                  "state": status.state if status else None, "reason": status.reason if status else None}))
"""


# --- the fleet ------------------------------------------------------------------------------------

def site_model_layers(seed: int = 7) -> list[tuple[np.ndarray, np.ndarray, str | None]]:
    """4 features -> hidden -> hidden -> 1, the hidden x hidden float32 weights about SITE_MODEL_BYTES."""
    rng = np.random.default_rng(seed)
    hidden = int(math.sqrt(SITE_MODEL_BYTES / 4))
    return [
        (rng.normal(0, 0.5, (4, hidden)).astype(np.float32), rng.normal(0, 0.1, hidden).astype(np.float32), "relu"),
        (rng.normal(0, 1 / math.sqrt(hidden), (hidden, hidden)).astype(np.float32),
         np.zeros(hidden, np.float32), "relu"),
        (rng.normal(0, 1 / math.sqrt(hidden), (hidden, 1)).astype(np.float32), np.zeros(1, np.float32), None),
    ]


def add_model(repo: Path, name: str, data: bytes, key, cases: list[dict] | None = None) -> None:
    """models/<name>/1.0.0/model.onnx, its cosign signature, and the Model document for it."""
    directory = repo / "models" / name / "1.0.0"
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(data)
    digest = hashlib.sha256(data).digest()
    (directory / "model.onnx.sig").write_bytes(trust.sign_digest(key, digest))
    uri = f"models/{name}/1.0.0/model.onnx"
    model = {"apiVersion": "reconciler/v1", "kind": "Model", "metadata": {"name": name}, "spec": {
        "interface": {"inputs": [{"name": "features", "dtype": "float32", "shape": [-1, 4]}],
                      "outputs": [{"name": "forecast", "dtype": "float32", "shape": [-1, 1]}]},
        "versions": [{"version": "1.0.0", "artifacts": [{
            "uri": uri, "digest": f"sha256:{digest.hex()}", "size": len(data),
            "signature": {"uri": f"{uri}.sig", "format": "cosign"}}], "validation": cases or []}]}}
    (repo / "models" / name / "model.yaml").write_text(yaml.safe_dump(model, sort_keys=False))


def add_deployment(repo: Path, name: str, labels: dict[str, str]) -> None:
    deployment = {"apiVersion": "reconciler/v1", "kind": "Deployment", "metadata": {"name": name},
                  "spec": {"model": name, "version": "1.0.0", "targets": {"matchLabels": labels}}}
    (repo / "deployments" / f"{name}.yaml").write_text(yaml.safe_dump(deployment, sort_keys=False))


def build_fleet(scratch: Path) -> Path:
    """The fleet's bare repository on the server's root, packed as a server keeps it."""
    repo = copy_example(scratch / "fleet", progressive=False)
    key = load_signing_key(EXAMPLE / "keys" / "demo.key")
    layers = site_model_layers()
    features = np.array([[0.8, 1.0, 0.0, 0.0], [1.2, 0.85, 1.0, 1.0]], np.float32)
    expected = dense_reference(layers, features)
    cases = [{"name": "two-days", "inputs": {"features": features.tolist()},
              "expected": {"forecast": expected.tolist()}, "tolerance": 0.001}]
    add_model(repo, MODEL, dense_model(layers, "features", "forecast"), key, cases)
    add_deployment(repo, MODEL, {"region": "us-east", "tier": "store"})
    rng = np.random.default_rng(11)
    for index in range(OTHER_MODELS):
        name = f"factory-model-{index}"
        add_model(repo, name, rng.bytes(OTHER_MODEL_BYTES), key)
        add_deployment(repo, name, {"tier": "factory"})
    # Big blobs go straight into a pack, with no delta search, when committed and when served.
    run_git(None, "init", "--quiet", "--bare", str(scratch / "srv" / "fleet.git"))
    run_git(scratch / "srv" / "fleet.git", "config", "core.bigFileThreshold", "1m")
    return init_bare_repo(scratch / "srv", "fleet", source_dir=repo)


# --- one side -------------------------------------------------------------------------------------

def baseline_code(scratch: Path) -> Path:
    """The package as it was at BASELINE, extracted from this repository's history."""
    where = scratch / "baseline-code"
    where.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE, "reconciler"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def disk_used(root: Path) -> int:
    """Bytes of disk allocated under ``root`` (what ``du`` says), files and directories."""
    total = 0
    for directory, _, files in os.walk(root):
        total += os.lstat(directory).st_blocks * 512
        total += sum(os.lstat(os.path.join(directory, name)).st_blocks * 512 for name in files)
    return total


def first_reconcile(server: GitHttpServer, code: Path, state: Path) -> dict:
    """One agent's first reconcile in its own process, importing the package from ``code``."""
    sent = server.bytes_sent
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, server.url("fleet"), SITE, str(state), str(EXAMPLE / "keys" / "demo.pub"), MODEL],
        cwd=state.parent, env={**os.environ, "PYTHONPATH": str(code)}, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["code"].startswith(str(code)):
        raise RuntimeError(f"the agent ran {result['code']}, not the code under {code}")
    if result["state"] != "success":
        raise RuntimeError(f"{SITE} did not deploy {MODEL}: {result}")
    # The next run starts from the same server: without this site's status record.
    run_git(server.root / "fleet.git", "update-ref", "-d", f"refs/reconciler/status/{SITE}")
    return {"fetched": server.bytes_sent - sent, "cache": disk_used(state / "cache"),
            "disk": disk_used(state), "seconds": result["seconds"]}


def mib(n: float) -> str:
    return f"{n / (1 << 20):7.1f} MiB"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one turn (the default)")
    parser.add_argument("--repetitions", type=int, default=1, help="turns, each a baseline and a subject run")
    return parser.parse_args()


def medians(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    args = arguments()
    with tempfile.TemporaryDirectory(prefix="bench-partial-") as scratch_name:
        scratch = Path(scratch_name)
        started = time.perf_counter()
        build_fleet(scratch)
        old_code = baseline_code(scratch)
        print(f"fleet repo built in {time.perf_counter() - started:.1f} s", flush=True)
        before, after = [], []
        with GitHttpServer(scratch / "srv") as server:
            for turn in range(args.repetitions):
                for runs, code, side in ((before, old_code, "before"), (after, ROOT, "after")):
                    state = scratch / f"{side}-{turn}" / "state"
                    state.parent.mkdir()
                    runs.append(first_reconcile(server, code, state))
                    shutil.rmtree(state.parent)
    base, subject = medians(before), medians(after)
    ratio = subject["fetched"] / base["fetched"]
    disk_ratio = subject["disk"] / base["disk"]
    print(f"first reconcile of {SITE}: its model {mib(SITE_MODEL_BYTES)}, others' {mib(OTHER_MODELS * OTHER_MODEL_BYTES)}"
          f" ({machine()})")
    print(f"  baseline  full fetch + whole tree    fetched {mib(base['fetched'])}  disk {mib(base['disk'])}"
          f" (cache + tree {mib(base['cache'])})  {base['seconds']:5.1f} s")
    print(f"  subject   partial clone, blobs read  fetched {mib(subject['fetched'])}  disk {mib(subject['disk'])}"
          f" (cache {mib(subject['cache'])})  {subject['seconds']:5.1f} s")
    print(f"  ratios (subject / baseline): fetched {ratio:.3f} (target <= {TARGET}), disk {disk_ratio:.3f}, "
          f"time {subject['seconds'] / base['seconds']:.3f} (median of {len(before)} turn(s))")
    emit("partial_clone", ratio, f"fetched and disk ratios <= {TARGET}", ratio <= TARGET and disk_ratio <= TARGET,
         f"fetched {subject['fetched'] / (1 << 20):.0f} vs {base['fetched'] / (1 << 20):.0f} MiB, "
         f"disk {subject['disk'] / (1 << 20):.0f} vs {base['disk'] / (1 << 20):.0f} MiB",
         before=base, after=subject, disk_ratio=round(disk_ratio, 3), turns=len(before))


if __name__ == "__main__":
    main()
