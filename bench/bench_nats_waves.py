"""NATS mode at fleet scale: a three-wave rollout in which every site puts its record, folds its
entry into its shard of the summaries bucket and gates on the summaries (status/nats_summaries.py,
the agent's NATS-mode gate path), time-compressed as bench/fleet_waves.py's Git-mode rollout (the
same ROLLOUT, ROLLOUT_INTERVAL, phases and success records); its gate decisions set against Git
mode's; the design before summaries (one whole-bucket watch per site, audit pushed at once) as the
same-run baseline at ``--baseline-sites``.

Simulated sites (``summary_worker``): many per process (``--workers`` processes), one NatsChannel
(one connection) per process, and one NatsSummaries per SITE: each site's read is its own cursor's
direct gets of the shards that moved since its last read, so the broker does per site what a real
fleet makes it do. Shared by the sites of a process, client side only: a shard revision's decoding,
and ``decide_gate``'s answer per wave for the sites due within the same GRID second, on the
process's newest view (at least as new as each due site's own; a call costs ~80 ms of Python at
10 000 sites, which the real fleet spends on 10 000 machines).

Baseline (``watch_worker``): the sites of a process share one watch of the records bucket; the
server's cost of one watch per site is projected from its CPU per delivery measured in this run
(500 connections watching, 20 records put).

Same decisions: every decision is logged with the number of entries in its process's view (which
only grows), and each process's records, in the order they reached its view, are published in Git
mode to shard summaries and the roll-up in a real repository (SummaryRefs), the gate decided again
from the roll-up at each logged decision, at the same ``now``, site by site. The sequences must be
equal (kind, reason, wave, opening instant).

Server CPU: nats-server's during the rollout, measured from /proc; the Git server's (backstop polls
every BACKSTOP, one batched audit push per site that moved, landing uniformly over AUDIT_SPREAD)
computed from per-operation costs measured in this run against nginx + git-http-backend when
installed: during the rollout, and over the spread after it.

    .venv/bin/python bench/bench_nats_waves.py [--quick] [--sites 10000] [--compare-sites 200]
        [--baseline-sites 1000] [--workers 2]"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench_fleet_sim import git_server, server_cpu  # first: puts the repo root on sys.path
from bench_nats import cpu_seconds
from common import ROOT, emit, machine
from fleet_waves import GATED, ROLLOUT, ROLLOUT_ID, ROLLOUT_INTERVAL, quantile, shard_numbers, success_record
from nats_watch_baseline import (
    BACKSTOP,
    Decisions,
    ReadSchedule,
    delivery_cpu,
    print_watch_rollout,
    watch_worker,
)

from reconciler.delivery.gates import decide_gate
from reconciler.delivery.summary import merged_reports
from reconciler.devtools.githttp import init_bare_repo, run_git
from reconciler.devtools.natsserver import NatsServer
from reconciler.gitdoor.source import GitSource
from reconciler.settings import NatsSettings
from reconciler.status.gitref import StatusRefs
from reconciler.status.nats_channel import NatsChannel, receive
from reconciler.status.nats_summaries import NatsSummaries
from reconciler.status.record import StatusRecord
from reconciler.status.summary_refs import RollUps, SummaryRefs

CHUNK = 50  # sites whose reads run at once on a process's connection
TARGET_CORES = 1.0  # issue 14: average server CPU (git + nats) during the rollout
AUDIT_SPREAD = 600.0 * ROLLOUT_INTERVAL / 30.0  # auditSpread's default (10 min), compressed as the interval


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10000, help="sites of the measured rollout (default: 10000)")
    parser.add_argument("--compare-sites", type=int, default=200,
                        help="sites of the rollout replayed in Git mode (default: 200; 0: none)")
    parser.add_argument("--baseline-sites", type=int, default=1000,
                        help="sites of the same-run baseline, the whole-bucket watch design (default: 1000; 0: none)")
    parser.add_argument("--workers", type=int, default=2, help="processes the sites are spread over (default: 2)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a rollout may take (default: 600)")
    parser.add_argument("--quick", action="store_true", help="1 000 sites, 60 compared")
    args = parser.parse_args()
    if args.quick:
        args.sites, args.compare_sites = min(args.sites, 1000), min(args.compare_sites, 60)
        args.baseline_sites = min(args.baseline_sites, 300)
    return args


# --- the simulated sites ----------------------------------------------------------------------------

def summary_worker(url: str, names: list[str], mine: list[str], start: float, seed: int, timeout: float,
                   results) -> None:
    """The sites ``mine`` as the agent runs them now: each puts its record and folds its entry into
    its shard (compare-and-swap), and each reads its gates through its OWN NatsSummaries (its own
    cursor: the broker answers every site's direct gets for the shards that moved since that site's
    last read, as a real fleet makes it). Only the decoding of a shard revision and the decision are
    shared by the sites of the process (decide_gate on the process's newest view, which is at least
    as new as each due site's). ``order``: the sites in the order their entries reached the
    process's view, which the Git replay publishes."""
    schedule, decisions = ReadSchedule(mine, start, random.Random(seed)), Decisions(names, mine, start)
    channel = NatsChannel(NatsSettings(servers=[url], timeout=30))
    readers = {site: NatsSummaries(channel) for site in mine}
    shard = shard_numbers(names)
    view: dict[str, tuple[int, dict]] = {}  # shard key -> newest revision any site of the process read
    order: list[str] = []
    in_view: set[str] = set()
    reads = []

    def put(record: StatusRecord) -> None:
        channel.put_record(record)
        readers[record.site].publish(record, GATED, shard[record.site])

    try:
        while time.monotonic() < start + timeout:
            batch = schedule.due_sites()
            began = time.monotonic()
            for chunk in range(0, len(batch), CHUNK):  # each chunk one request round of the channel's timeout
                sites = batch[chunk:chunk + CHUNK]
                channel.run(lambda js, kv, sites=sites: asyncio.gather(*(readers[s].catch_up(GATED) for s in sites)))
            reads.append((time.monotonic() - began, len(batch)))
            for site in batch:
                for key, (revision, summary) in readers[site].shards(GATED).items():
                    if key not in view or view[key][0] < revision:
                        view[key] = (revision, summary)
            reports = merged_reports(summary for _, summary in view.values())
            arrived = sorted(site for site, report in reports.items()
                             if report.rollout_id == ROLLOUT_ID and site not in in_view)
            order += arrived
            in_view.update(arrived)
            if len(order) == len(names):
                break
            decisions.decide(batch, reports, len(order), put)
            schedule.read_again(batch)
    finally:
        channel.close()
    results.put({"log": decisions.log, "reads": [seconds for seconds, _ in reads], "puts": decisions.puts,
                 "moved": decisions.moved, "opened": decisions.opened, "order": order, "site_reads": sum(count for _, count in reads),
                 "requests": sum(r.requests for r in readers.values()),
                 "messages": sum(r.pulled_messages for r in readers.values()),
                 "pulled": sum(r.pulled for r in readers.values())})


def nats_rollout(server: NatsServer, sites: int, workers: int, timeout: float, seed: int,
                 worker=summary_worker) -> dict:
    names = [f"store-{number:05d}" for number in range(sites)]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start = time.monotonic() + 3.0  # the workers' imports and connections
    processes = [context.Process(target=worker, daemon=True,
                                 args=(server.url, names, names[i::workers], start, seed + i, timeout, results))
                 for i in range(workers)]
    for process in processes:
        process.start()
    cpu_before = cpu_seconds(server.process.pid)
    parts = [results.get(timeout=timeout + 120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    moved = {site: at for part in parts for site, at in part["moved"].items()}
    seconds = max(moved.values()) if len(moved) == sites else float("inf")
    opened: dict[str, float] = {}
    for part in parts:
        for wave, at in part["opened"].items():
            opened[wave] = min(at, opened.get(wave, at))
    return {"sites": sites, "names": names, "seconds": seconds, "moved": len(moved), "opened": opened, "parts": parts,
            "site_reads": sum(part.get("site_reads", 0) for part in parts),
            "requests": sum(part.get("requests", 0) for part in parts),
            "messages": sum(part.get("messages", 0) for part in parts),
            "pulled": sum(part.get("pulled", 0) for part in parts),
            "log": sorted((entry for part in parts for entry in part["log"]), key=lambda entry: entry[1]),
            "reads": [r for part in parts for r in part["reads"]], "puts": [p for part in parts for p in part["puts"]],
            "nats_cpu": cpu_seconds(server.process.pid) - cpu_before, "wall": time.monotonic() - start}


def records_in_order(url: str) -> list[StatusRecord]:
    """The records bucket's records in the order they were put (stream revision)."""
    import nats

    async def read() -> list[StatusRecord]:
        connection = await nats.connect(url)
        try:
            kv = await connection.jetstream().key_value(NatsSettings(servers=[url]).records_bucket)
            watcher, entries = await kv.watchall(), []
            async for entry in watcher:
                if entry is None:
                    break
                entries.append(entry)
            await watcher.stop()
        finally:
            await connection.close()
        return [receive(e.value, e.revision, e.key).record for e in sorted(entries, key=lambda e: e.revision)]

    return asyncio.run(read())


# --- Git mode: the same history, the same instants ---------------------------------------------------

def git_replay(server: object, names: list[str], log: list, history: list[StatusRecord], scratch: Path,
               repo: str) -> dict:
    """Every logged decision of one process decided again from Git summaries holding the same
    first k records of that process's view (``history``: the records in the order they reached it)."""
    labels, shard = dict.fromkeys(names, {}), shard_numbers(names)
    by_count: dict[int, list] = {}
    for entry in log:
        by_count.setdefault(entry[2], []).append(entry)
    url = server.url  # type: ignore[attr-defined]
    summaries = RollUps(GitSource(url(repo), "main", scratch / "reader"))
    writers: dict[int, SummaryRefs] = {}  # one per shard: its entries in a status repository of its own, as the agent's
    doors: list[RollUps | StatusRefs] = [summaries]

    def writer(number: int) -> SummaryRefs:
        if number not in writers:
            entries = StatusRefs(GitSource(url(repo, f"status-{number:04d}"), "main", scratch / f"status-{number}"))
            writers[number] = SummaryRefs(GitSource(url(repo), "main", scratch / f"writer-{number}"), entries)
            doors.extend((entries, writers[number]))
        return writers[number]

    differ, reads, writes, cpu_before = [], [], [], server_cpu(server)
    try:
        for count in range(len(history) + 1):
            if count in by_count:
                began = time.monotonic()
                reports = summaries.reports(GATED)
                reads.append(time.monotonic() - began)
                for site, now, _, *nats_said in by_count[count]:
                    decision = decide_gate(ROLLOUT, GATED, ROLLOUT_ID, site, labels, reports, now)
                    git_said = [decision.kind, decision.reason, decision.wave, decision.earliest_start]
                    if git_said != nats_said:
                        differ.append((site, now, count, nats_said, git_said))
            if count < len(history):
                began = time.monotonic()
                number = shard[history[count].site]
                writer(number).write(history[count], {GATED: number})
                writes.append(time.monotonic() - began)
    finally:
        for door in doors:
            door.close()
    return {"decisions": len(log), "differ": differ, "reads": reads, "writes": writes,
            "git_cpu": server_cpu(server) - cpu_before}


def replay_all(server: object, run: dict, url: str, scratch: Path) -> dict:
    """``git_replay`` of each process's decisions; the records from the records bucket."""
    records = {record.site: record for record in records_in_order(url)}
    parts = [git_replay(server, run["names"], part["log"], [records[site] for site in part["order"]], scratch / str(number),
                        f"summaries-{number}") for number, part in enumerate(run["parts"])]
    return {"decisions": sum(p["decisions"] for p in parts), "differ": [d for p in parts for d in p["differ"]],
            "read_p50": statistics.median(r for p in parts for r in p["reads"]),
            "write_p50": statistics.median(w for p in parts for w in p["writes"]),
            "git_cpu": sum(p["git_cpu"] for p in parts)}


def git_costs(server: object, scratch: Path, samples: int = 10) -> tuple[float, float, float]:
    """Server CPU of one NATS-mode site's Git work: a backstop poll of the fleet branch, the audit
    write of one state change pushed at once (before batching), and one batched audit push of two
    queued state changes (StatusRefs.queue, push_queued), in a status repo of a few sites."""
    source = GitSource(server.url("fleet"), "main", scratch / "poll")  # type: ignore[attr-defined]
    before = server_cpu(server)
    for _ in range(samples):
        source.remote_head()
    poll = (server_cpu(server) - before) / samples
    audit = StatusRefs(GitSource(server.url("status"), "main", scratch / "audit"))  # type: ignore[attr-defined]
    try:
        before = server_cpu(server)
        for number in range(samples):
            audit.write(success_record(f"audit-{number:03d}", datetime.now(UTC)))
        write = (server_cpu(server) - before) / samples
        for number in range(samples):  # the first write from a cache fetches the site's ref: not counted
            audit.queue(success_record(f"batch-{number:03d}", datetime.now(UTC)))
        before = server_cpu(server)
        for number in range(samples):
            site = f"batch-{number:03d}"
            audit.queue(success_record(site, datetime.now(UTC)).model_copy(update={"state": "progressing"}))
            audit.push_queued(site)
        return poll, write, (server_cpu(server) - before) / samples
    finally:
        audit.close()


def git_repos(root: Path, workers: int) -> None:
    for name, seed in (("fleet", ROOT / "example-fleet-repo"), ("status", None),
                       *((f"summaries-{number}", None) for number in range(workers))):
        bare = init_bare_repo(root, name, seed)
        for key, value in (("http.receivepack", "true"), ("uploadpack.allowFilter", "true")):
            run_git(bare, "config", key, value)


# --- the report --------------------------------------------------------------------------------------

def audit_landing(run: dict, push_cpu: float) -> tuple[float, float]:
    """Git server CPU of the batched audit pushes (one per site that moved, uniform over AUDIT_SPREAD
    after its move): the share landing within the rollout, and the rest, after it."""
    wall, within = run["wall"], 0.0
    for part in run["parts"]:
        for at in part["moved"].values():
            within += min(1.0, max(0.0, wall - at) / AUDIT_SPREAD)
    return within * push_cpu, (run["moved"] - within) * push_cpu


def print_summary_rollout(run: dict, poll_cpu: float, push_cpu: float) -> dict:
    seconds, sites, wall = run["seconds"], run["sites"], run["wall"]
    nats_cores = run["nats_cpu"] / wall
    backstop_cores = sites * (1 / BACKSTOP) * poll_cpu
    within, after = audit_landing(run, push_cpu)
    during = nats_cores + backstop_cores + within / wall
    later = backstop_cores + after / AUDIT_SPREAD
    reads = max(run["site_reads"], 1)
    opened = ", ".join(f"{wave} {at:.0f} s" for wave, at in sorted(run["opened"].items(), key=lambda item: item[1]))
    print(f"SUMMARIES, {sites} sites: {seconds:.1f} s (waves opened: {opened}); {run['moved']} moved; "
          f"{len(run['log'])} decisions; {run['site_reads']} site reads: {run['requests'] / reads:.2f} direct get requests, "
          f"{run['messages'] / reads:.1f} shards and {run['pulled'] / reads / 1e3:.1f} KB per read; batch catch-up p50/p99 {statistics.median(run['reads']) * 1e3:.0f}/"
          f"{quantile(run['reads'], 99) * 1e3:.0f} ms; put + fold p50/p99 {statistics.median(run['puts']) * 1e3:.1f}/"
          f"{quantile(run['puts'], 99) * 1e3:.1f} ms", flush=True)
    print(f"  nats-server {run['nats_cpu']:.1f} s over {wall:.0f} s: {nats_cores:.3f} cores "
          f"({run['nats_cpu'] / max(run['moved'], 1) * 1e3:.2f} ms per site moved, "
          f"{run['nats_cpu'] / max(run['messages'], 1) * 1e6:.0f} us per shard read incl. puts); Git: backstop polls "
          f"{backstop_cores:.3f} cores, batched audit pushes ({push_cpu * 1e3:.0f} ms each, one per site, spread "
          f"{AUDIT_SPREAD:.0f} s) {within:.0f} s within the rollout + {after:.0f} s after it", flush=True)
    print(f"  server CPU (nats + git): {during:.3f} cores during the rollout, {later:.3f} cores over the spread after it",
          flush=True)
    return {"sites": sites, "seconds": seconds, "moved": run["moved"], "decisions": len(run["log"]),
            "nats_cores": round(nats_cores, 4), "cores_during": round(during, 4), "cores_after": round(later, 4),
            "requests_per_read": round(run["requests"] / reads, 3), "shards_per_read": round(run["messages"] / reads, 2),
            "bytes_per_read": round(run["pulled"] / reads),
            "nats_cpu_per_site_moved_s": run["nats_cpu"] / max(run["moved"], 1)}


def main() -> None:
    args = arguments()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}; {args.workers} processes, "
          f"interval {ROLLOUT_INTERVAL:.0f} s, bake {ROLLOUT.gate.bakeTime}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        git_repos(root / "srv", args.workers)
        with git_server(root / "srv", root / "run") as (git_name, server):
            print(f"git server: {git_name}", flush=True)
            poll_cpu, write_cpu, push_cpu = git_costs(server, root / "costs")
            print(f"Git server CPU per backstop poll {poll_cpu * 1e3:.1f} ms, per audit write pushed at once "
                  f"{write_cpu * 1e3:.1f} ms, per batched audit push (2 commits) {push_cpu * 1e3:.1f} ms", flush=True)
            compared = None
            if args.compare_sites:
                with NatsServer(root / "nats-compare") as nats_server:
                    small = nats_rollout(nats_server, args.compare_sites, args.workers, args.timeout, seed=1)
                    print_summary_rollout(small, poll_cpu, push_cpu)
                    compared = replay_all(server, small, nats_server.url, root / "replay")
                print(f"  same decisions as Git mode: {compared['decisions'] - len(compared['differ'])} of "
                      f"{compared['decisions']} equal (Git replay: roll-up read p50 {compared['read_p50'] * 1e3:.0f} ms, "
                      f"publish p50 {compared['write_p50'] * 1e3:.0f} ms)", flush=True)
                for site, now, count, nats_said, git_said in compared["differ"][:5]:
                    print(f"    differs: {site} at {now:%H:%M:%S.%f} on {count} records: NATS {nats_said}, "
                          f"Git {git_said}", flush=True)
            baseline = None
            if args.baseline_sites:
                with NatsServer(root / "nats-fan-out") as nats_server:
                    per_delivery = delivery_cpu(nats_server)
                with NatsServer(root / "nats-watch") as nats_server:
                    old = nats_rollout(nats_server, args.baseline_sites, args.workers, args.timeout, seed=3,
                                       worker=watch_worker)
                baseline = print_watch_rollout(old, poll_cpu, write_cpu, per_delivery)
                with NatsServer(root / "nats-same-size") as nats_server:
                    same_size = print_summary_rollout(nats_rollout(nats_server, args.baseline_sites, args.workers,
                                                                   args.timeout, seed=3), poll_cpu, push_cpu)
            with NatsServer(root / "nats") as nats_server:
                large = nats_rollout(nats_server, args.sites, args.workers, args.timeout, seed=2)
            figures = print_summary_rollout(large, poll_cpu, push_cpu)
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)
    cores = max(figures["cores_during"], figures["cores_after"])
    same = compared is None or not compared["differ"]
    ratio = baseline["cores"] / same_size["cores_during"] if baseline else float("nan")
    emit("nats_waves", ratio, f"three waves complete, same decisions as Git mode, server <= {TARGET_CORES:.0f} core",
         large["moved"] == args.sites and same and cores <= TARGET_CORES,
         f"{args.sites} sites in {large['seconds']:.0f} s, {figures['cores_during']:.2f} cores during the rollout, "
         f"{figures['cores_after']:.2f} while the audit lands; {'same' if same else 'DIFFERENT'} decisions; "
         f"whole-bucket watch / summaries at {args.baseline_sites} sites: {ratio:.1f}x server CPU",
         rollout=figures, baseline=baseline, compared_sites=args.compare_sites,
         compared_decisions=compared and compared["decisions"], differing=compared and len(compared["differ"]),
         poll_cpu_s=poll_cpu, audit_write_cpu_s=write_cpu, audit_push_cpu_s=push_cpu)


if __name__ == "__main__":
    main()
