"""The NATS channel at fleet scale, on one machine: how long a new fleet commit takes to reach every
site, and what a status record costs on the wire, each beside its Git counterpart in the same run.

- Notification: N simulated sites, each its own NATS connection subscribed to the fleet bucket's
  commit key as status/nats_channel.py subscribes, spread over a few worker processes (asyncio);
  `reconciler notify`'s put of a commit, repeated; latency from the put to each site's receipt
  (one system-wide monotonic clock). Baseline: one site's no-op Git poll (`git ls-remote --heads`
  of the branch) against the project's smart-HTTP server, timed in turns with the notifications.
  Ratio: p99 of the fleet's notification latency over the baseline's median: below 1, a push
  reaches every site before one poll has answered.
- Bytes per status publish: one realistic record put to the records bucket (bytes both ways on
  the client connection) vs StatusRefs.write of the same record (a git push to a repo that holds
  N status refs: bytes the server sent, which include the ref advertisement).

    .venv/bin/python bench/bench_nats.py [--quick] [--repetitions N] [--sites N] [--workers N]"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from common import Stats, emit, machine, timed  # first: puts the repo root on sys.path

from reconciler.devtools.githttp import GitHttpServer, init_bare_repo, run_git
from reconciler.devtools.natsserver import NatsServer
from reconciler.gitdoor.source import GitSource
from reconciler.settings import NatsSettings
from reconciler.status.gitref import STATUS_REF_PREFIX, StatusRefs
from reconciler.status.nats_channel import COMMIT_KEY, NatsChannel
from reconciler.status.record import DeploymentStatus, StatusRecord

FLEET_BUCKET = NatsSettings(servers=["nats://h:1"]).fleet_bucket
TARGET_P99_S = 2.0  # issue 14: commit -> every site notified, p99 <= 2 s at 10 000 sites


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 sites, 5 commits")
    parser.add_argument("--repetitions", type=int, default=20, help="commits announced (default: 20)")
    parser.add_argument("--sites", type=int, default=1000, help="simulated sites (default: 1000)")
    parser.add_argument("--workers", type=int, default=4, help="processes the sites are spread over (default: 4)")
    args = parser.parse_args()
    if args.quick:
        args.sites, args.repetitions = min(args.sites, 200), 5
    return args


def site_worker(url: str, sites: int, ready, go, results) -> None:
    """``sites`` connections, each subscribed to the commit key's subject; per commit received, the
    latency from the put (its value carries the monotonic time it was put at)."""
    import nats

    async def main() -> None:
        latencies: list[tuple[str, float]] = []  # (commit, seconds)
        connections = []

        async def received(msg) -> None:
            commit, sent = msg.data.decode().split(":")
            latencies.append((commit, time.monotonic() - float(sent)))

        for _ in range(sites):
            nc = await nats.connect(url, allow_reconnect=False, connect_timeout=30)
            await nc.subscribe(f"$KV.{FLEET_BUCKET}.{COMMIT_KEY}", cb=received)
            connections.append(nc)
        for nc in connections:
            await nc.flush()
        ready.put(sites)
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        await asyncio.sleep(1.0)  # the last commit's deliveries
        for nc in connections:
            await nc.close()
        results.put(latencies)

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def notification_latency(server: NatsServer, args, poll) -> tuple[list[float], list[float], list[float], float]:
    """Per-site latencies of every commit, the per-commit latency of the slowest site, the
    baseline polls timed in turns with the commits, and the server's CPU seconds per commit."""
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    shares = [args.sites // args.workers + (1 if i < args.sites % args.workers else 0) for i in range(args.workers)]
    workers = [context.Process(target=site_worker, args=(server.url, share, ready, go, results), daemon=True)
               for share in shares if share]
    for worker in workers:
        worker.start()
    connected = sum(ready.get(timeout=600) for _ in workers)
    assert connected == args.sites
    notifier = NatsChannel(NatsSettings(servers=[server.url], timeout=10))
    polls = []
    cpu_before = cpu_seconds(server.process.pid)
    try:
        for round_ in range(args.repetitions):
            polls.append(timed(poll))
            notifier.put_commit(f"{round_:040x}:{time.monotonic()}")
            time.sleep(max(0.5, args.sites / 2000))  # every delivery of this commit done before the next
    finally:
        server_cpu = (cpu_seconds(server.process.pid) - cpu_before) / args.repetitions  # idle connections' pings too
        go.set()
        notifier.close()
    received = [pair for _ in workers for pair in results.get(timeout=600)]
    for worker in workers:
        worker.join(timeout=60)
    expected = args.sites * args.repetitions
    assert len(received) == expected, f"{expected - len(received)} notifications lost"
    by_commit: dict[str, list[float]] = {}
    for commit, latency in received:
        by_commit.setdefault(commit, []).append(latency)
    return [latency for _, latency in received], [max(latencies) for latencies in by_commit.values()], polls, server_cpu


def record(site: str, when: datetime) -> StatusRecord:
    deployments = {name: DeploymentStatus(model=name, state="success", version="1.4.2", activeVersion="1.4.2",
                                          previousVersion="1.4.1", wave="early", rollout="0123456789ab",
                                          reason="Active", message=f"{name} 1.4.2 serves all traffic", since=when)
                   for name in ("demand-forecast", "shelf-vision", "fraud-score")}
    return StatusRecord(site=site, observedCommit="a" * 40, appliedCommit="a" * 40, state="success",
                        reason="Converged", deployments=deployments, agentVersion="0.1.0", writtenAt=when)


def nats_publish_bytes(server: NatsServer, when: datetime) -> int:
    channel = NatsChannel(NatsSettings(servers=[server.url], timeout=10), "store-bench")
    try:
        channel.put_record(record("store-bench", when))  # binds the bucket
        stats = channel._nc.stats
        before = stats["in_bytes"] + stats["out_bytes"]
        channel.put_record(record("store-bench", datetime.now(UTC)))
        return stats["in_bytes"] + stats["out_bytes"] - before
    finally:
        channel.close()


def git_push_bytes(root: Path, sites: int, when: datetime) -> tuple[int, GitHttpServer, str]:
    """A fleet repo with ``sites`` status refs behind smart HTTP; the bytes one status write
    receives from the server. Returns the running server and the repo's URL too."""
    bare = init_bare_repo(root / "srv", "fleet")
    seed = root / "seed"
    run_git(None, "init", "-q", "-b", "main", str(seed))
    (seed / "fleet.yaml").write_text("kind: Fleet\n")
    run_git(seed, "add", "-A")
    run_git(seed, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "seed")
    run_git(seed, "push", "-q", str(bare), "main")
    head = run_git(seed, "rev-parse", "HEAD").strip()
    refs = "".join(f"create {STATUS_REF_PREFIX}store-{i:05d} {head}\n" for i in range(sites))
    subprocess.run(["git", "update-ref", "--stdin"], input=refs, text=True, cwd=bare, check=True)
    run_git(bare, "pack-refs", "--all")
    server = GitHttpServer(root / "srv").start()
    url = server.url("fleet")
    status = StatusRefs(GitSource(url, "main", root / "cache.git"))
    try:
        status.write(record("store-bench", when))  # the cache learns the ref; the measured write is the next
        before = server.bytes_sent
        status.write(record("store-bench", datetime.now(UTC)).model_copy(update={"reason": "Converged again"}))
        return server.bytes_sent - before, server, url
    finally:
        status.close()


def main() -> None:
    args = arguments()
    when = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as folder, NatsServer(Path(folder) / "nats") as server:
        git_bytes, git_server, url = git_push_bytes(Path(folder) / "git", args.sites, when)
        try:
            nats_bytes = nats_publish_bytes(server, when)

            def poll() -> None:
                subprocess.run(["git", "ls-remote", "--heads", url, "main"], check=True, capture_output=True)

            per_site, slowest, polls, server_cpu = notification_latency(server, args, poll)
        finally:
            git_server.stop()
    notified, poll_stats = Stats.of(per_site), Stats.of(polls)
    p99 = statistics.quantiles(per_site, n=100, method="inclusive")[98]
    ratio = p99 / poll_stats.median
    print(f"machine: {machine()}; {args.sites} sites in {args.workers} processes, {args.repetitions} commits")
    print(f"commit -> site notified: p50 {notified.median * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
          f"slowest site per commit (median) {statistics.median(slowest) * 1e3:.1f} ms")
    print(f"nats-server CPU per commit (fan-out to {args.sites} sites, idle connections included): "
          f"{server_cpu * 1e3:.1f} ms")
    print(f"baseline, one no-op git poll (ls-remote --heads): {poll_stats.ms()}")
    print(f"bytes per status publish: NATS {nats_bytes} B, git push {git_bytes} B with {args.sites} status refs "
          f"({git_bytes / nats_bytes:.0f}x)")
    emit("nats", ratio, f"commit -> every site p99 <= {TARGET_P99_S:.0f} s", p99 <= TARGET_P99_S,
         f"{args.sites} sites notified p99 {p99 * 1e3:.0f} ms", sites=args.sites,
         notified=notified.to_json(), notified_p99_s=round(p99, 6), git_poll=poll_stats.to_json(),
         nats_publish_bytes=nats_bytes, git_push_bytes=git_bytes, server_cpu_per_commit_s=round(server_cpu, 4))


if __name__ == "__main__":
    main()
