"""The fleet simulator's poll phase (bench/bench_fleet_sim.py): N simulated sites, each polling
every ``interval`` seconds ± 10 % from a random phase, on a pool of threads, with latency from
each poll's intended start (no coordinated omission), bytes and server CPU counted at the server.
Designs: ``before`` (the pattern poll the agent ran once), ``after`` (``git ls-remote --heads``,
the git poll), ``beacon`` (the head beacon, git at its backstop: bench/beacon_polls.py)."""

from __future__ import annotations

import argparse
import heapq
import random
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git
from beacon_polls import BeaconSites

from reconciler.devtools.githttp import run_git
from reconciler.devtools.nginxgit import install_beacon_hook
from reconciler.gitdoor.source import GitSource

__all__ = ["PollPhase", "old_poll", "poll_phase", "poll_phases", "server_cpu"]


def server_cpu(server: object) -> float:
    return getattr(server, "cpu_seconds", float("nan"))


def old_poll(url: str) -> Callable[[], object]:
    """The no-op poll as the agent ran it before: a pattern that git matches on the client."""
    remote = git.Git()
    return lambda: remote.ls_remote("--", url, "refs/heads/main")


@dataclass
class PollPhase:
    polls: int
    p50: float
    p99: float
    bytes_per_poll: float
    cpu_per_poll: float
    client_cpu: float  # simulator CPU (its git processes included) per second


def poll_phase(server: object, poll: Callable[[int], object], sites: int, interval: float, duration: float,
               workers: int, seed: int) -> PollPhase:
    """``sites`` sites poll every ``interval`` s ± 10 % from a random phase for ``duration`` s;
    latency runs from each poll's intended start, so a poll that waited for a free worker is late."""
    rng = random.Random(seed)
    start = time.monotonic() + 1.0
    due = [(start + rng.uniform(0, interval), site) for site in range(sites)]
    heapq.heapify(due)
    latencies: list[float] = []
    lock = threading.Lock()

    def run(site: int, intended: float) -> None:
        poll(site)
        with lock:
            latencies.append(time.monotonic() - intended)

    bytes_before, cpu_before = server.bytes_sent, server_cpu(server)  # type: ignore[attr-defined]
    usage_before = _own_cpu()
    with ThreadPoolExecutor(workers) as pool:
        while due and due[0][0] < start + duration:
            intended, site = heapq.heappop(due)
            time.sleep(max(0.0, intended - time.monotonic()))
            pool.submit(run, site, intended)
            heapq.heappush(due, (intended + interval * rng.uniform(0.9, 1.1), site))
    polls = len(latencies)
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if polls > 1 else [0.0] * 99
    return PollPhase(polls, statistics.median(latencies) if latencies else 0.0, quantiles[98],
                     (server.bytes_sent - bytes_before) / max(polls, 1),  # type: ignore[attr-defined]
                     (server_cpu(server) - cpu_before) / max(polls, 1), (_own_cpu() - usage_before) / duration)


def _own_cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def poll_phases(server: object, names: list[str], root: Path, args: argparse.Namespace) -> dict:
    """One poll phase per design: ``before`` (the pattern poll), ``after`` (``ls-remote --heads``,
    the git poll), ``beacon`` (the head beacon, git at its backstop); git designs up to
    ``--git-poll-max`` sites."""
    result = {}
    for design in args.poll_designs.split(","):
        if design != "beacon" and len(names) > args.git_poll_max:
            continue
        with _poll_of(design, server, names, root, args) as (poll, git_polls):
            if poll is None:
                print(f"  poll phase {design}: skipped (the head beacon is served by nginx only)", flush=True)
                continue
            phase = poll_phase(server, poll, len(names), args.interval, args.duration, args.workers, len(names))
        load = open("/proc/loadavg").read().split()[0]
        gits = phase.polls if git_polls() is None else git_polls()
        result[f"poll_phase_{design}"] = phase.__dict__ | {"git_polls": gits, "load": float(load)}
        print(f"  poll phase {design:<6} {phase.polls:6d} polls ({gits:5d} git)  p50 {phase.p50 * 1e3:8.1f} ms  "
              f"p99 {phase.p99 * 1e3:8.1f} ms  {phase.bytes_per_poll:10,.0f} B/poll  server CPU "
              f"{phase.cpu_per_poll * 1e3:6.2f} ms/poll  simulator {phase.client_cpu:4.2f} cores  load {load}", flush=True)
    return result


@contextmanager
def _poll_of(design: str, server: object, names: list[str], root: Path,
             args: argparse.Namespace) -> Iterator[tuple[Callable[[int], object] | None, Callable[[], int | None]]]:
    """One site's poll in ``design``, and how many git polls the phase ran (None: every poll)."""
    url = server.url  # type: ignore[attr-defined]
    if design == "before":
        poll = old_poll(url("before"))
        yield (lambda site: poll()), lambda: None
    elif design == "after":
        sources = [GitSource(url("after"), "main", root / "unused") for _ in names]
        yield (lambda site: sources[site].remote_head()), lambda: None
    elif not hasattr(server, "beacon_url"):
        yield None, lambda: 0
    else:
        bare = root / "srv" / "after.git"
        install_beacon_hook(bare)
        sites = BeaconSites(server.beacon_url("after"), url("after"), root, len(names), args.backstop)
        try:
            started = time.perf_counter()
            sites.prime(run_git(bare, "rev-parse", "refs/heads/main"), seed=len(names))
            print(f"  beacon: {len(names)} sites primed in {time.perf_counter() - started:.1f} s", flush=True)
            yield sites.poll, lambda: sites.git_polls
        finally:
            sites.close()
