"""A real crash: `reconciler batch run` over 1 000 small files is SIGKILLed mid-run, run again, and
every file is processed exactly once: one `done` ledger line per (input digest, model digest), one
complete output per file, no temp file left."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from reconciler.batch.ledger import Ledger
from tests.batch_site import BatchSite, expected, read_jsonl, spec, write_jsonl

FILES = 1000
ROWS_PER_FILE = 3


def batch_run(site: BatchSite) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "reconciler", "batch", "run", "iris", "--config",
                             str(site.site_yaml)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_sigkill_mid_run_then_restart_processes_every_file_exactly_once(tmp_path):
    site = BatchSite(tmp_path)
    model = site.install("1.0.0", spec(maxRecordsPerBatch=2))
    rows = np.random.default_rng(3).normal(size=(FILES, ROWS_PER_FILE, 4)).astype(np.float32)
    for i in range(FILES):
        write_jsonl(site.inputs / f"part-{i:04d}.jsonl", rows[i])

    child = batch_run(site)
    deadline = time.monotonic() + 120
    while len(list(site.outputs.glob("*.out.jsonl"))) < 50 and time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before = len([e for e in Ledger(site.state / "batch" / "iris").entries() if e.result == "done"])
    assert 0 < done_before < FILES, "the kill must land in the middle of the run"

    again = batch_run(site)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err.decode()
    summary = json.loads(out)
    assert (summary["filesAlreadyDone"], summary["files"]) == (done_before, FILES - done_before)

    entries = [e for e in Ledger(site.state / "batch" / "iris").entries() if e.result == "done"]
    keys = [(e.input, e.model) for e in entries]
    assert len(keys) == len(set(keys)) == FILES
    digests = {"sha256:" + hashlib.sha256((site.inputs / f"part-{i:04d}.jsonl").read_bytes()).hexdigest()
               for i in range(FILES)}
    assert {e.input for e in entries} == digests and {e.model for e in entries} == {model}
    outputs = sorted(site.outputs.glob("*.out.jsonl"))
    assert len(outputs) == FILES and not list(site.outputs.rglob(".*.tmp"))
    for i in (0, done_before - 1, done_before, FILES - 1):  # around the kill, and the ends
        lines = read_jsonl(site.outputs / f"part-{i:04d}.jsonl.out.jsonl")
        assert [line["record"] for line in lines] == list(range(ROWS_PER_FILE))
        np.testing.assert_allclose([line["outputs"]["output"] for line in lines], expected("1.0.0", rows[i]),
                                   atol=1e-5)
    assert all(len(path.read_text().splitlines()) == ROWS_PER_FILE for path in outputs)
