"""Commit -> every local site converged: <= interval + 2 s by polling; <= 1 s with the webhook.

Three site agents run as processes (`reconciler run`, 2 s poll interval) against the example fleet
(without waves and canaries, so every site switches as soon as it has validated) on a git
smart-HTTP server on 127.0.0.1. Each repetition bumps demand-forecast (1.0.0 <-> 1.1.0) and times
from the end of `git push` until every site's status record says it serves the new version:
once by polling alone, once with the push webhook POSTed to each site right after the push, in
turns. The `git push` itself is timed as the baseline of the same run.

    .venv/bin/python bench/bench_converge.py [--quick] [--repetitions N]"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import Stats, arguments, emit, machine  # first: puts the repo root on sys.path

from reconciler.devtools.processes import free_port, stop_all
from reconciler.devtools.testing import EXAMPLE, git, start_fleet_remote
from reconciler.gitdoor.source import GitSource
from reconciler.runtime.hooks import HOOK_PATH
from reconciler.status.gitref import StatusRefs

SITES = ("store-berlin-01", "store-boston-01", "store-mumbai-01")  # stores with no maintenance window
INTERVAL = 2.0
TIMEOUT = 60.0


def start_agents(root: Path, url: str) -> dict[str, tuple[int, subprocess.Popen]]:
    agents = {}
    for site in SITES:
        port = free_port()
        agents[site] = (port, subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--repo", url, "--site", site, "--state", str(root / site),
             "--listen", f"127.0.0.1:{port}", "--interval", f"{INTERVAL:g}s",
             "--trust-key", str(EXAMPLE / "keys" / "demo.pub")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return agents


def await_version(refs: StatusRefs, head: str, version: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        records = refs.read_all()
        if all(site in records and records[site].observedCommit == head
               and records[site].deployments.get("demand-forecast") is not None
               and records[site].deployments["demand-forecast"].activeVersion == version for site in SITES):
            return
        time.sleep(0.05)
    raise RuntimeError(f"sites did not converge on {head[:12]} within {TIMEOUT:.0f}s")


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=5, quick=2)
    with tempfile.TemporaryDirectory(prefix="bench-converge-") as scratch:
        root = Path(scratch)
        remote = start_fleet_remote(root)
        agents = start_agents(root, remote.url)
        refs = StatusRefs(GitSource(remote.url, "main", root / "observer.git"))
        try:
            await_version(refs, git("rev-parse", "HEAD", cwd=remote.clone).strip(), "1.0.0")
            pushes, polled, hooked = [], [], []
            current = "1.0.0"
            for _ in range(args.repetitions):
                for samples, webhook in ((polled, False), (hooked, True)):
                    new = "1.1.0" if current == "1.0.0" else "1.0.0"
                    remote.bump("deployments/demand-forecast.yaml", current, new)
                    started = time.perf_counter()
                    head = remote.push(f"demand-forecast {new}")
                    pushed = time.perf_counter()
                    if webhook:
                        with httpx.Client(timeout=5) as client:
                            for port, _ in agents.values():
                                client.post(f"http://127.0.0.1:{port}{HOOK_PATH}", json={"after": head})
                    await_version(refs, head, new)
                    samples.append(time.perf_counter() - pushed)
                    pushes.append(pushed - started)
                    current = new
        finally:
            refs.close()
            stop_all(process for _, process in agents.values())
            remote.server.stop()
    push, poll, hook = Stats.of(pushes), Stats.of(polled), Stats.of(hooked)
    print(f"commit -> {len(SITES)} sites converged ({machine()}; poll interval {INTERVAL:g} s)")
    print(f"  baseline  git push               {push.ms()}")
    print(f"  polling                          {poll.ms()}  (target <= interval + 2 s = {INTERVAL + 2:g} s)")
    print(f"  webhook                          {hook.ms()}  (target <= 1 s)")
    ratio = hook.median / 1.0
    emit("commit_to_converged", ratio, "webhook <= 1 s; polling <= interval + 2 s",
         hook.median <= 1.0 and poll.median <= INTERVAL + 2,
         f"webhook {hook.median:.2f} s, polling {poll.median:.2f} s (interval {INTERVAL:g} s)",
         push=push.to_json(), polling=poll.to_json(), webhook=hook.to_json(), interval_s=INTERVAL)


if __name__ == "__main__":
    main()
