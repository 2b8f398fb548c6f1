"""No-op reconcile: one cheap remote check; <= 1.5 x a bare `git ls-remote` of the same remote.

The example fleet is served over git smart-HTTP on 127.0.0.1; an in-process agent (no runtime)
reconciles it once for real (fetch, verify, validate the models), and then every further
reconcile_once() has nothing to do. Baseline: `git ls-remote URL refs/heads/main` as a subprocess,
timed in turns with the no-op reconcile.

    .venv/bin/python bench/bench_noop_reconcile.py [--quick] [--repetitions N]"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from common import Stats, arguments, emit, interleaved, machine  # first: puts the repo root on sys.path

from reconciler.agent.loop import Agent
from reconciler.agent.wiring import build_agent
from reconciler.devtools.testing import EXAMPLE, start_fleet_remote
from reconciler.settings import SiteConfig

TARGET = 1.5
SITE = "store-berlin-01"  # a pilot store without maintenance windows: its first reconcile activates
WARMUP = 3


def bare_ls_remote(url: str) -> None:
    subprocess.run(["git", "ls-remote", url, "refs/heads/main"], check=True, capture_output=True,
                   env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})


def noop_reconcile(agent: Agent) -> None:
    result = agent.reconcile_once()
    if not result.noop:
        raise RuntimeError(f"expected a no-op reconcile, got plan={result.plan} error={result.error}")


def converged_agent(url: str, state: Path) -> Agent:
    """An agent that has done its first, real reconcile of ``url``."""
    config = SiteConfig(site=SITE, repo=url, state=state, trust_keys=[EXAMPLE / "keys" / "demo.pub"])
    agent = build_agent(config, runtime=None)
    agent.start()
    first = agent.reconcile_once()
    if first.error is not None or first.plan is None:
        raise RuntimeError(f"first reconcile failed: {first.error}")
    return agent


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=30, quick=10)
    with tempfile.TemporaryDirectory(prefix="bench-noop-") as scratch:
        remote = start_fleet_remote(Path(scratch))
        try:
            agent = converged_agent(remote.url, Path(scratch) / "state")
            try:
                for _ in range(WARMUP):  # first runs pay for imports, page cache, connection setup
                    bare_ls_remote(remote.url)
                    noop_reconcile(agent)
                base, subject = interleaved(lambda: bare_ls_remote(remote.url), lambda: noop_reconcile(agent),
                                            args.repetitions)
            finally:
                agent.stop()
                agent.source.close()
        finally:
            remote.server.stop()

    base_stats, subject_stats = Stats.of(base), Stats.of(subject)
    ratio = subject_stats.median / base_stats.median
    paired = Stats.of([s / b for b, s in zip(base, subject, strict=True)])
    print(f"no-op reconcile vs bare git ls-remote over smart-HTTP on 127.0.0.1 ({machine()})")
    print(f"  baseline  git ls-remote     {base_stats.ms()}")
    print(f"  subject   reconcile_once()  {subject_stats.ms()}")
    print(f"  ratio of medians {ratio:.2f} (target <= {TARGET}); "
          f"per-pair ratio median {paired.median:.2f} (p10 {paired.p10:.2f}, p90 {paired.p90:.2f})")
    emit("noop_reconcile", ratio, f"ratio <= {TARGET}", ratio <= TARGET,
         f"no-op {subject_stats.median * 1e3:.0f} ms vs ls-remote {base_stats.median * 1e3:.0f} ms",
         baseline=base_stats.to_json(), subject=subject_stats.to_json())


if __name__ == "__main__":
    main()
