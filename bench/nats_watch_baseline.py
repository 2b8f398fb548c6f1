"""The design before shard summaries, kept as bench_nats_waves.py's same-run baseline: the sites of
a process share ONE watch of the whole records bucket (NatsChannel.received) and decide on it; one
watching connection per site is projected from nats-server's CPU per delivery, measured with 500
watching connections while 20 records are put; every audit write is pushed at once."""

from __future__ import annotations

import asyncio
import heapq
import math
import multiprocessing
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bench_nats import cpu_seconds  # first (through common): puts the repo root on sys.path
from fleet_waves import GATED, ROLLOUT, ROLLOUT_ID, ROLLOUT_INTERVAL, success_record

from reconciler.delivery.gates import SiteReport, decide_gate, site_report
from reconciler.delivery.rollout import wave_index
from reconciler.devtools.natsserver import NatsServer
from reconciler.settings import NatsSettings
from reconciler.status.nats_channel import NatsChannel, Received
from reconciler.status.record import StatusRecord

GRID = 1.0  # s: the sites of a process due in the same second share one read and one decision per wave
BACKSTOP = 600.0 * ROLLOUT_INTERVAL / 30.0  # the README's 10 min NATS-mode Git poll, compressed as the interval


def watch_worker(url: str, names: list[str], mine: list[str], start: float, seed: int, timeout: float,
                results) -> None:
    """The sites ``mine`` until every site's record is in the view (or ``timeout``): per decision
    (site, now, records in the view, kind, reason, wave, opening), read and put latencies, the
    instants (from ``start``) at which its sites moved and each wave first opened."""
    schedule, decisions = ReadSchedule(mine, start, random.Random(seed)), Decisions(names, mine, start)
    seen: dict[str, Received] = {}
    reports: dict[str, SiteReport] = {}
    reads = []
    channel = NatsChannel(NatsSettings(servers=[url], timeout=30))
    try:
        while time.monotonic() < start + timeout:
            batch = schedule.due_sites()
            began = time.monotonic()
            written = _follow(channel.received(), seen, reports)
            reads.append(time.monotonic() - began)
            if written == len(names):
                break
            decisions.decide(batch, reports, written, lambda record: channel.put_record(record))
            schedule.read_again(batch)
    finally:
        channel.close()
    results.put({"log": decisions.log, "reads": reads, "puts": decisions.puts, "moved": decisions.moved,
                 "opened": decisions.opened})


class ReadSchedule:
    """Each site of a process reads every ROLLOUT_INTERVAL ± 10 %, from a random phase; the sites
    due within the same GRID second read together."""

    def __init__(self, sites: list[str], start: float, rng: random.Random):
        self.start, self.rng = start, rng
        self.due = [(start + rng.uniform(0, ROLLOUT_INTERVAL), site) for site in sites]
        heapq.heapify(self.due)

    def due_sites(self) -> list[str]:
        """Once the next grid second with a due site comes: the sites due by then."""
        time.sleep(max(0.0, self.start + math.ceil((self.due[0][0] - self.start) / GRID) * GRID - time.monotonic()))
        batch = []
        while self.due and self.due[0][0] <= time.monotonic():
            batch.append(heapq.heappop(self.due)[1])
        return batch

    def read_again(self, sites: list[str]) -> None:
        for site in sites:
            heapq.heappush(self.due, (time.monotonic() + ROLLOUT_INTERVAL * self.rng.uniform(0.9, 1.1), site))


class Decisions:
    """The gate decisions of a process's sites, one ``decide_gate`` per wave per batch (on the same
    view, every site of a wave decides the same), and what the sites that proceeded did."""

    def __init__(self, names: list[str], mine: list[str], start: float):
        self.labels = dict.fromkeys(names, {})
        self.waves = {site: wave_index(ROLLOUT, GATED, site, {}) for site in mine}
        self.start = start
        self.log: list[tuple] = []  # (site, now, records in the view, kind, reason, wave, opening)
        self.puts: list[float] = []
        self.moved: dict[str, float] = {}  # site -> seconds from start
        self.opened: dict[int, float] = {}  # wave -> seconds from start

    def decide(self, batch: list[str], reports: dict[str, SiteReport], in_view: int,
               put: Callable[[StatusRecord], object]) -> None:
        now, decided = datetime.now(UTC), {}
        for site in batch:
            if site in self.moved:
                continue
            wave = self.waves[site]
            if wave not in decided:
                decided[wave] = decide_gate(ROLLOUT, GATED, ROLLOUT_ID, site, self.labels, reports, now)
            decision = decided[wave]
            self.log.append((site, now, in_view, decision.kind, decision.reason, decision.wave, decision.earliest_start))
            if decision.kind == "proceed":
                began = time.monotonic()
                put(success_record(site, now))
                self.puts.append(time.monotonic() - began)
                self.moved[site] = time.monotonic() - self.start
                self.opened.setdefault(decision.wave, self.moved[site])


def _follow(view: dict[str, Received], seen: dict[str, Received], reports: dict[str, SiteReport]) -> int:
    """``reports`` brought up to ``view`` (only the records that changed are read again); how many
    sites report this rollout."""
    for site, received in view.items():
        if seen.get(site) is not received:
            seen[site] = received
            report = site_report(received.record, GATED)
            if report is None:
                reports.pop(site, None)
            else:
                reports[site] = report
    return sum(1 for report in reports.values() if report.rollout_id == ROLLOUT_ID)


# --- what one watching connection per site would cost the server ------------------------------------

def watcher_worker(url: str, watchers: int, expected: int, ready, results) -> None:
    """``watchers`` connections, each watching the records bucket as NatsChannel does (an ordered
    consumer over every key); the entries they receive once ``expected`` arrived."""
    import nats

    async def main() -> None:
        got, done, connections, tasks = [0], asyncio.Event(), [], []

        async def follow(watcher) -> None:
            async for entry in watcher:
                if entry is not None:
                    got[0] += 1
                    if got[0] == expected:
                        done.set()

        for _ in range(watchers):
            connection = await nats.connect(url, allow_reconnect=False, connect_timeout=30)
            kv = await connection.jetstream().key_value(NatsSettings(servers=[url]).records_bucket)
            tasks.append(asyncio.create_task(follow(await kv.watchall())))
            connections.append(connection)
        ready.put(watchers)
        try:
            await asyncio.wait_for(done.wait(), 300)
        finally:
            for task in tasks:
                task.cancel()
            for connection in connections:
                await connection.close()
        results.put(got[0])

    asyncio.run(main())


def delivery_cpu(server: NatsServer, watchers: int = 500, puts: int = 20) -> float:
    """nats-server CPU per record delivered to one watching connection: ``puts`` records put while
    ``watchers`` connections watch the bucket."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    channel = NatsChannel(NatsSettings(servers=[server.url], timeout=30))
    channel.record("nobody")  # binds (creates) the buckets before the watchers look for them
    worker = context.Process(target=watcher_worker, args=(server.url, watchers, watchers * puts, ready, results),
                             daemon=True)
    worker.start()
    try:
        ready.get(timeout=300)
        before = cpu_seconds(server.process.pid)
        for number in range(puts):
            channel.put_record(success_record(f"fan-out-{number:03d}", datetime.now(UTC)))
        delivered = results.get(timeout=300)
        return (cpu_seconds(server.process.pid) - before) / delivered
    finally:
        channel.close()
        worker.join(timeout=60)


def print_watch_rollout(run: dict, poll_cpu: float, audit_cpu: float, per_delivery: float) -> dict:
    """The design before summaries: one whole-bucket watch (shared per process, its per-site
    fan-out projected from the measured CPU per delivery) and every audit write pushed at once."""
    sites, nats_cores = run["sites"], run["nats_cpu"] / run["wall"]
    git_cpu = run["moved"] * audit_cpu + sites * (run["wall"] / BACKSTOP) * poll_cpu
    fan_out = len(run["puts"]) * sites * per_delivery
    cores = nats_cores + git_cpu / run["wall"] + fan_out / run["wall"]
    print(f"BASELINE whole-bucket watch, {sites} sites: {run['seconds']:.1f} s; {run['moved']} moved; nats-server "
          f"{run['nats_cpu']:.1f} s measured (shared watch) + {fan_out:.0f} s projected fan-out ({len(run['puts'])} puts "
          f"x {sites} watchers x {per_delivery * 1e6:.0f} us); Git {git_cpu:.1f} s (audit pushed at once, "
          f"{audit_cpu * 1e3:.0f} ms each); server {cores:.2f} cores over {run['wall']:.0f} s", flush=True)
    return {"sites": sites, "seconds": run["seconds"], "cores": round(cores, 3), "fan_out_cores": round(fan_out / run["wall"], 3),
            "nats_cores_shared_watch": round(nats_cores, 4), "git_cores": round(git_cpu / run["wall"], 4)}
