"""Fleet simulator: what the Git channel costs at N sites, today's design against the cheap one,
measured in the same run against a real git smart-HTTP server (nginx + fcgiwrap +
git-http-backend when ``make bench-deps`` installed them, else reconciler's own server; the
output names which).

For each N it builds two copies of the fleet repository (the example fleet plus one real status
commit per site): ``before``, today's layout (every status ref in the fleet repo, gates read every
record), and ``after`` (status refs and summary entry refs in per-shard namespaces of at most
SHARD_SIZE sites, the summaries' roll-up in a namespace of its own). Then:

1. per operation, in interleaved batches: bytes and server CPU of a no-op poll, a gate read
   (fetch + ``decide_gate``) and a status write, each through reconciler's own code; today's poll
   is the command line the agent ran before (a pattern, no ``--heads``);
2. a poll phase: N simulated sites, each polling every ``--interval`` seconds ± 10 % from a
   random phase for ``--duration`` seconds, on a pool of threads: the pattern poll, the git
   poll (each a git process), and the head beacon (the agent's own poll code, a conditional GET,
   git at the real ``--backstop``: bench/beacon_polls.py); latency is measured from each poll's
   intended start, so a late start counts (no coordinated omission). Server CPU and bytes are
   counted at the server (reconciler/devtools/nginxgit.py), the load average printed with each.

3. a commit's fetch wave, at once and spread, and a time-compressed three-wave rollout in Git
   mode with summaries (bench/fleet_waves.py says how).

Not simulated (yet): loading and planning a changed commit.

    python bench/bench_fleet_sim.py [--quick] [--sites 100,1000,3000] [--interval 30] [--duration 60]
                                    [--poll-phase-max 3000] [--phases operations,poll,fetch,rollout]
                                    [--poll-designs before,after,beacon] [--git-poll-max 3000] [--backstop 600]"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import ROOT, emit, machine
from fleet_waves import FetchReplay, default_spread, fetch_wave, new_commit, three_wave_rollout
from poll_phases import old_poll, poll_phases, server_cpu

from reconciler.delivery.gates import decide_gate, site_report
from reconciler.delivery.rollout import wave_groups
from reconciler.delivery.summary import encode, fold, shards
from reconciler.devtools.githttp import GitHttpServer, init_bare_repo, run_git
from reconciler.devtools.nginxgit import NAME as NGINX
from reconciler.devtools.nginxgit import NginxGitServer, available
from reconciler.gitdoor.source import GitSource
from reconciler.manifests.models import Rollout
from reconciler.status.gitref import STATUS_FILE, STATUS_REF_PREFIX, StatusRefs, record_json
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.status.summary_refs import SummaryRefs, entry_ref, rollup_file, rollup_ref

DEPLOYMENTS = ("defect-detector", "demand-forecast", "fraud-score")
GATED = "fraud-score"
ROLLOUT_ID = "a1b2c3d4e5f6"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ROLLOUT = Rollout.model_validate({
    "waves": [{"name": "pilot", "percent": 1}, {"name": "early", "percent": 10}, {"name": "all", "percent": 100}],
    "gate": {"minHealthyRatio": 0.9, "bakeTime": "5m", "progressDeadline": "30m"},
})


def site_name(number: int) -> str:
    return f"store-{number:05d}"


def record(site: str, minute: float, state: str = "success") -> StatusRecord:
    deployments = {name: DeploymentStatus(model=name, state=state, version="3.2.0", activeVersion="3.2.0",
                                          previousVersion="3.1.0", wave="all", rollout=ROLLOUT_ID,
                                          reason="Converged", since=T0) for name in DEPLOYMENTS}
    return StatusRecord(site=site, observedCommit="a" * 40, appliedCommit="a" * 40, state=state, reason="Converged",
                        deployments=deployments, agentVersion="0.1.0", writtenAt=T0 + timedelta(minutes=minute))


def shard_numbers(sites: list[str]) -> dict[str, int]:
    """Each site's shard of GATED's summaries, as the agent numbers it (gated_shards)."""
    return shards(wave_groups(ROLLOUT, GATED, dict.fromkeys(sites, {})))


def status_namespace(shard: int) -> str:
    return f"status-{shard:04d}"


# --- the fleet repositories ---------------------------------------------------------------------

def build_repos(root: Path, sites: list[str]) -> None:
    """``before.git`` and ``after.git``: the example fleet, and one status commit per site in
    each layout (written with one ``git fast-import`` each: minutes of pushes otherwise)."""
    for name in ("before", "after"):
        bare = init_bare_repo(root, name, ROOT / "example-fleet-repo")
        for key, value in (("http.receivepack", "true"), ("uploadpack.allowFilter", "true")):
            run_git(bare, "config", key, value)
    records, shard = {site: record(site, 0) for site in sites}, shard_numbers(sites)
    before = {STATUS_REF_PREFIX + site: [(STATUS_FILE, record_json(r))] for site, r in records.items()}
    _fast_import(root / "before.git", before)
    after = {f"refs/namespaces/{status_namespace(shard[site])}/{STATUS_REF_PREFIX}{site}":
             [(STATUS_FILE, record_json(r))] for site, r in records.items()}
    summaries: dict[int, dict] = {}
    for site, r in records.items():
        summaries[shard[site]] = fold(summaries.get(shard[site], {}), r, GATED)
        after[f"refs/namespaces/{status_namespace(shard[site])}/{entry_ref(GATED, site)}"] = [
            (rollup_file(shard[site]), encode(GATED, fold({}, r, GATED)))]
    after[f"refs/namespaces/summaries/{rollup_ref(GATED)}"] = [(rollup_file(number), encode(GATED, summary))
                                                              for number, summary in summaries.items()]
    _fast_import(root / "after.git", after)


def _fast_import(bare: Path, refs: dict[str, list[tuple[str, bytes]]]) -> None:
    chunks, mark = [], 0
    for ref, files in refs.items():
        message, lines = b"status\n", []
        for name, data in files:
            mark += 1
            chunks += [b"blob\nmark :%d\ndata %d\n" % (mark, len(data)), data, b"\n"]
            lines.append(b"M 100644 :%d %s\n" % (mark, name.encode()))
        chunks += [b"commit %s\ncommitter reconciler-agent <agent@reconciler.local> 1772445600 +0000\n" % ref.encode(),
                   b"data %d\n%s" % (len(message), message), *lines, b"\n"]
    subprocess.run(["git", "fast-import", "--quiet"], cwd=bare, input=b"".join(chunks), check=True)
    run_git(bare, "pack-refs", "--all")


# --- the server ---------------------------------------------------------------------------------

@contextmanager
def git_server(root: Path, run: Path) -> Iterator[tuple[str, object]]:
    """nginx + fcgiwrap when installed, else reconciler's own server (no CPU figures then)."""
    if available():
        with NginxGitServer(root, run) as server:
            yield NGINX, server
    else:
        with GitHttpServer(root) as server:
            yield "reconciler.devtools.githttp (nginx/fcgiwrap not installed: make bench-deps)", server


@dataclass
class Cost:
    seconds: float
    bytes: float
    cpu: float

    def line(self, what: str) -> str:
        return f"{what:<34} {self.bytes:>12,.0f} B {self.seconds * 1e3:>9.1f} ms  server CPU {self.cpu * 1e3:7.1f} ms"


def per_operation(server: object, action: Callable[[], object], times: int) -> Cost:
    """Average wall time, server bytes and server CPU of ``action`` over ``times`` calls."""
    bytes_before, cpu_before = server.bytes_sent, server_cpu(server)  # type: ignore[attr-defined]
    started = time.perf_counter()
    for _ in range(times):
        action()
    seconds = (time.perf_counter() - started) / times
    sent = (server.bytes_sent - bytes_before) / times  # type: ignore[attr-defined]
    return Cost(seconds, sent, (server_cpu(server) - cpu_before) / times)


# --- the operations, as a site runs them --------------------------------------------------------

class Site:
    """One site's caches and doors, in each layout."""

    def __init__(self, server: object, sites: list[str], index: int, scratch: Path):
        self.name, self.sites = sites[index], sites
        self.shard = shard_numbers(sites)[self.name]
        url = server.url  # type: ignore[attr-defined]
        self.source = GitSource(url("after"), "main", scratch / "fleet")
        self.before = StatusRefs(GitSource(url("before"), "main", scratch / "before"))
        self.status = StatusRefs(GitSource(url("after", status_namespace(self.shard)), "main", scratch / "status"))
        self.summaries = SummaryRefs(GitSource(url("after", "summaries"), "main", scratch / "summaries"), self.status)
        self.written = {"before": 0, "after": 0}

    def next_record(self, layout: str) -> StatusRecord:
        """A record that differs from the site's last one in this layout, so it is written."""
        self.written[layout] += 1
        count = self.written[layout]
        return record(self.name, count, "progressing" if count % 2 else "success")

    def gate(self, reports: dict) -> None:
        labels = dict.fromkeys(self.sites, {})
        decide_gate(ROLLOUT, GATED, ROLLOUT_ID, self.name, labels, reports, T0 + timedelta(hours=2))

    def gate_before(self) -> None:
        records = self.before.read_all()
        self.gate({s: r for s, rec in records.items() if (r := site_report(rec, GATED)) is not None})

    def gate_after(self) -> None:
        self.gate(self.summaries.reports(GATED))

    def write_before(self) -> None:
        self.before.write(self.next_record("before"))

    def write_after(self) -> None:
        self.summaries.write(self.next_record("after"), {GATED: self.shard})  # the record and its entry in one push

    def close(self) -> None:
        for door in (self.source, self.before, self.status, self.summaries):
            door.close()


# --- the run ------------------------------------------------------------------------------------

OPERATIONS = (("no-op poll", "poll"), ("gate read (fetch + decide)", "gate"), ("status write", "write"))


def measure_size(sites: int, args: argparse.Namespace) -> dict:
    names = [site_name(n) for n in range(sites)]
    with tempfile.TemporaryDirectory(prefix="fleet-sim-") as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        build_repos(root / "srv", names)
        print(f"N={sites}: repositories built in {time.perf_counter() - started:.1f} s", flush=True)
        with git_server(root / "srv", root / "run") as (server_name, server):
            result = {"server": server_name}
            if "operations" in args.phases:
                probes = [Site(server, names, index, root / f"site-{index}")
                          for index in range(0, sites, sites // 3 or 1)][:3]
                try:
                    result["operations"] = _operations(server, probes, args.samples)
                finally:
                    for probe in probes:
                        probe.close()
            if "poll" in args.phases and sites <= args.poll_phase_max:
                result.update(poll_phases(server, names, root, args))
            if "fetch" in args.phases:
                result["fetch_wave"] = _fetch_waves(server, sites, root, args)
            if "rollout" in args.phases and sites <= args.rollout_max:
                result["rollout"] = _rollout(server, names, root, args)
    return result


def _fetch_waves(server: object, sites: int, root: Path, args: argparse.Namespace) -> dict:
    """The same commit fetched by every site, at once and spread, in turns."""
    old, new, blob = new_commit(root / "srv" / "after.git", root / "committer")
    replay = FetchReplay(server.url("after"), old, new, blob)  # type: ignore[attr-defined]
    waves: dict[str, list] = {"at once": [], "spread": []}
    for turn in range(args.wave_turns):
        for label, spread in (("at once", 0.0), ("spread", default_spread(sites))):
            wave = fetch_wave(server, replay, sites, spread, args.workers, seed=turn)
            waves[label].append(wave.__dict__)
            print(f"  fetch wave {label:<8} spread {wave.spread:5.1f} s: {wave.seconds:6.1f} s, server CPU "
                  f"{wave.server_cpu:6.2f} s (peak {wave.peak_cores:4.2f} cores), in flight <= {wave.in_flight:3d}, "
                  f"p50/p99 {wave.p50:5.2f}/{wave.p99:5.2f} s, service p99 {wave.service_p99 * 1e3:6.0f} ms", flush=True)
    return waves


def _rollout(server: object, names: list[str], root: Path, args: argparse.Namespace) -> dict:
    url = server.url  # type: ignore[attr-defined]
    rollout = three_wave_rollout(server, names, lambda shard: url("after", status_namespace(shard)),
                                 url("after", "rollout"), root / "rollout", args.workers, args.rollout_timeout, seed=1)
    opened = ", ".join(f"{wave} {at:.0f} s" for wave, at in rollout.wave_opened.items())
    print(f"  three-wave rollout: {rollout.seconds:6.1f} s (waves opened: {opened}); {rollout.reads} reads p99 "
          f"{rollout.read_p99 * 1e3:.0f} ms, {rollout.writes} writes p99 {rollout.write_p99 * 1e3:.0f} ms "
          f"({rollout.retried} retried), "
          f"{rollout.bytes_per_read:,.0f} B/operation; server CPU {rollout.server_cpu:.1f} s "
          f"(peak {rollout.peak_cores:.2f} cores)", flush=True)
    return rollout.__dict__


def _operations(server: object, probes: list[Site], samples: int) -> dict:
    """Each operation of each layout, in turns (before, after, before, ...) so noise hits both."""
    actions = {
        ("poll", "before"): [old_poll(server.url("before")) for _ in probes],  # type: ignore[attr-defined]
        ("poll", "after"): [p.source.remote_head for p in probes],
        ("gate", "before"): [p.gate_before for p in probes], ("gate", "after"): [p.gate_after for p in probes],
        ("write", "before"): [p.write_before for p in probes], ("write", "after"): [p.write_after for p in probes],
    }
    for calls in actions.values():  # warm caches: a site's first read or write fetches what it lacks
        for call in calls:
            call()
    costs: dict[tuple[str, str], list[Cost]] = {key: [] for key in actions}
    for _ in range(samples):
        for key, calls in actions.items():
            costs[key].append(per_operation(server, lambda calls=calls: [call() for call in calls], 1))
    summary = {}
    for label, key in OPERATIONS:
        for design in ("before", "after"):
            samples_of = costs[(key, design)]
            cost = Cost(*(statistics.median(getattr(c, f) for c in samples_of) / len(probes)
                          for f in ("seconds", "bytes", "cpu")))
            print("  " + cost.line(f"{label}, {design}"), flush=True)
            summary[f"{key}_{design}"] = cost.__dict__
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 sites, a 10 s interval for 20 s")
    parser.add_argument("--sites", default="100,1000,3000", help="comma-separated fleet sizes")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between a site's polls")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of each poll phase")
    parser.add_argument("--workers", type=int, default=64, help="threads running polls")
    parser.add_argument("--samples", type=int, default=5, help="batches per operation")
    parser.add_argument("--poll-phase-max", type=int, default=3000,
                        help="largest N given a poll phase (beyond it 2 cores cannot generate the load)")
    parser.add_argument("--phases", default="operations,poll,fetch,rollout", help="which phases to run")
    parser.add_argument("--poll-designs", default="before,after,beacon",
                        help="polls measured in the poll phase: before (pattern), after (--heads), beacon")
    parser.add_argument("--git-poll-max", type=int, default=3000, help="largest N given a git poll phase")
    parser.add_argument("--backstop", type=float, default=600.0, help="seconds between a beacon site's git polls")
    parser.add_argument("--wave-turns", type=int, default=2, help="fetch waves of each kind, in turns")
    parser.add_argument("--rollout-max", type=int, default=3000, help="largest N given a three-wave rollout")
    parser.add_argument("--rollout-timeout", type=float, default=480.0, help="seconds a rollout may take")
    args = parser.parse_args()
    if args.quick:
        args.sites, args.interval, args.duration, args.samples = "100", 10.0, 20.0, 3
    print(f"fleet simulator on {machine()}; load average {open('/proc/loadavg').read().split()[0]}", flush=True)
    results = {int(n): measure_size(int(n), args) for n in args.sites.split(",")}
    largest = results[max(results)]
    if "operations" not in largest:
        return
    before = largest["operations"]["poll_before"]["bytes"]
    after = largest["operations"]["poll_after"]["bytes"]
    emit("fleet_sim", before / after, "no-op poll <= 1 KB at the largest N", after <= 1024,
         f"no-op poll {after:,.0f} B vs {before:,.0f} B at N={max(results)} ({largest['server']})",
         sizes={str(n): r for n, r in results.items()})


if __name__ == "__main__":
    main()
