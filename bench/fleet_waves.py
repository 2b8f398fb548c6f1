"""The fleet simulator's two wave phases (bench/bench_fleet_sim.py runs them):

- **a commit's fetch wave**: every site learns of a new commit at the same instant (a NATS
  notification, a webhook) and fetches it, at once or after a random share of the agent's default
  fetch spread (agent/loop.py ``fetch_spread``). Each site's fetch is replayed as the smart-HTTP
  requests git makes for it (capabilities, ``ls-refs`` for the branch, a ``fetch`` of the new
  commit with ``filter blob:none`` and the old one as ``have``, then the changed file's blob), so
  the simulator spends no git process of its own and the server does all it would. Reported:
  server CPU, its peak over one-second windows, the most requests in flight, latency from the
  notification.
- **a three-wave rollout** in Git mode with summaries: each site, from a random phase, every
  interval reads the deployment's roll-up as the requests git makes for it (``RollupRead``: the
  server does each site's work, the simulator runs no git process for it), decides its gate with
  ``decide_gate`` on a view at least as new as its read, shared by the simulator's sites
  (``SharedView``: one real ``RollUps`` reader), and, once it may, writes its status record and its
  summary entry to its shard's status repository, then gathers its shard into the roll-up, through
  its own caches, exactly the agent's calls; its roll-up write leases the tip its decision was
  taken on, as the agent's leases the tip its read fetched into the same cache (the site's cache
  borrows the view's objects: ``SimSite.as_read``; before, it fetched the whole roll-up first,
  which at 10 000 sites is ~100 shard files no agent fetches then); a site that moved
  keeps reading, as a watching agent does, until the last site moved. Time is
  compressed the same way for every N (ROLLOUT_INTERVAL, ROLLOUT's bakeTime). Before the clock
  starts each site's cache learns its own status ref, as a running agent's has (it wrote its
  pending record then): a write is then a push, not a fetch and a push. Not simulated: the
  fleet poll beside each read, downloading and validating models, the pending record a waiting
  site writes once."""

from __future__ import annotations

import heapq
import http.client
import random
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.agent.loop import FETCH_WAVE_RATE
from reconciler.delivery.gates import decide_gate
from reconciler.delivery.rollout import wave_groups
from reconciler.delivery.summary import shards
from reconciler.errors import Transient
from reconciler.gitdoor.source import GitSource
from reconciler.manifests.models import Rollout
from reconciler.status.gitref import StatusRefs
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.status.summary_refs import RollUps, SummaryRefs, rollup_ref

GATED = "fraud-score"
ROLLOUT_ID = "b2c3d4e5f6a1"
ROLLOUT_INTERVAL = 20.0  # seconds between a watching site's reads (30 s in the field)
ROLLOUT = Rollout.model_validate({  # the field's 5m bake compressed to 10 s
    "waves": [{"name": "pilot", "percent": 1}, {"name": "early", "percent": 10}, {"name": "all", "percent": 100}],
    "gate": {"minHealthyRatio": 0.9, "bakeTime": "10s", "progressDeadline": "10m"},
})
FIELD_INTERVAL = 30.0  # the interval the default fetch spread is derived from


def shard_numbers(names: list[str]) -> dict[str, int]:
    """Each simulated site's shard of GATED's summaries, as the agent numbers it (gated_shards)."""
    return shards(wave_groups(ROLLOUT, GATED, dict.fromkeys(names, {})))


# --- sampling the server -------------------------------------------------------------------------

class CpuSampler:
    """The server's CPU every ``period`` s in a thread: its total and its busiest window, in cores."""

    def __init__(self, server: object, period: float = 1.0):
        self.server, self.period = server, period
        self.stop, self.peak = threading.Event(), 0.0
        self.first = server.cpu_seconds  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        last, at = self.first, time.monotonic()
        while not self.stop.wait(self.period):
            now_cpu, now = self.server.cpu_seconds, time.monotonic()  # type: ignore[attr-defined]
            self.peak = max(self.peak, (now_cpu - last) / (now - at))
            last, at = now_cpu, now

    def finish(self) -> tuple[float, float]:
        self.stop.set()
        self.thread.join()
        return self.server.cpu_seconds - self.first, self.peak  # type: ignore[attr-defined]


def quantile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else (values or [0.0])[0]


# --- a commit's fetch wave ------------------------------------------------------------------------

def pkt(line: str) -> bytes:
    data = line.encode()
    return f"{len(data) + 4:04x}".encode() + data


def new_commit(bare: Path, scratch: Path) -> tuple[str, str, str]:
    """A commit on ``main`` of ``bare`` that changes one deployment file: (old, new, its blob)."""
    run = lambda *args: subprocess.run(["git", *args], cwd=scratch, check=True, capture_output=True,  # noqa: E731
                                       text=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", str(bare), str(scratch)], check=True)
    old = run("rev-parse", "HEAD")
    path = scratch / "deployments" / f"{GATED}.yaml"
    path.write_text(path.read_text() + "# a new commit\n")
    run("-c", "user.name=ci", "-c", "user.email=ci@example.com", "commit", "-qam", "a new commit")
    run("push", "-q", "origin", "HEAD:main")
    return old, run("rev-parse", "HEAD"), run("rev-parse", f"HEAD:deployments/{GATED}.yaml")


class FetchReplay:
    """One site's fetch of the new commit, as git's requests over one HTTP/1.1 connection."""

    def __init__(self, url: str, old: str, new: str, blob: str):
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        head = [pkt("object-format=sha1\n"), b"0001"]
        self.bodies = [
            b"".join([pkt("command=ls-refs\n"), *head, pkt("peel\n"), pkt("symrefs\n"),
                      pkt("ref-prefix refs/heads/main\n"), b"0000"]),
            b"".join([pkt("command=fetch\n"), *head, pkt("thin-pack\n"), pkt("ofs-delta\n"), pkt("filter blob:none\n"),
                      pkt(f"want {new}\n"), pkt(f"have {old}\n"), pkt("done\n"), b"0000"]),
            None,  # the promisor fetch of the blob starts with the capabilities again
            b"".join([pkt("command=fetch\n"), *head, pkt("thin-pack\n"), pkt("ofs-delta\n"), pkt("filter blob:none\n"),
                      pkt(f"want {blob}\n"), pkt("done\n"), b"0000"]),
        ]

    def __call__(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            for body in [None, *self.bodies]:
                upload_pack(connection, self.path, body)
        finally:
            connection.close()


def upload_pack(connection: http.client.HTTPConnection, path: str, body: bytes | None) -> bytes:
    """One protocol v2 request of git's over smart HTTP: the capabilities (``body`` None), or a command."""
    if body is None:
        connection.request("GET", f"{path}/info/refs?service=git-upload-pack", headers={"Git-Protocol": "version=2"})
    else:
        connection.request("POST", f"{path}/git-upload-pack", body, headers={
            "Git-Protocol": "version=2", "Content-Type": "application/x-git-upload-pack-request",
            "Accept": "application/x-git-upload-pack-result"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200 or not data:
        raise RuntimeError(f"git request replayed: HTTP {response.status}")
    return data


def pkt_lines(data: bytes) -> list[bytes]:
    """The payloads of a pkt-line stream, flush and delimiter packets left out."""
    lines, at = [], 0
    while at + 4 <= len(data):
        size = int(data[at:at + 4], 16)
        if size > 4:
            lines.append(data[at + 4:at + size])
        at += max(size, 4)
    return lines


@dataclass
class FetchWave:
    spread: float
    seconds: float  # from the notification to the last site's fetch done
    server_cpu: float
    peak_cores: float
    in_flight: int  # the most fetches under way at once
    p50: float  # from the notification
    p99: float
    service_p99: float  # from the fetch's own start


def fetch_wave(server: object, fetch: Callable[[], None], sites: int, spread: float, workers: int,
               seed: int) -> FetchWave:
    rng = random.Random(seed)
    start = time.monotonic() + 0.5
    due = sorted(start + rng.uniform(0, spread) for _ in range(sites))
    lock, latencies, services, flying, most = threading.Lock(), [], [], [0], [0]

    def one() -> None:
        began = time.monotonic()
        with lock:
            flying[0] += 1
            most[0] = max(most[0], flying[0])
        fetch()
        done = time.monotonic()
        with lock:
            flying[0] -= 1
            latencies.append(done - start)
            services.append(done - began)

    sampler = CpuSampler(server, 0.5)
    with ThreadPoolExecutor(workers) as pool:
        for intended in due:
            time.sleep(max(0.0, intended - time.monotonic()))
            pool.submit(one)
    cpu, peak = sampler.finish()
    return FetchWave(spread, max(latencies), cpu, peak, most[0], statistics.median(latencies), quantile(latencies, 99),
                     quantile(services, 99))


def default_spread(sites: int) -> float:
    """The agent's default fetch spread for a fleet of ``sites`` at the field interval."""
    return min(sites / FETCH_WAVE_RATE, FIELD_INTERVAL / 2)


# --- a three-wave rollout --------------------------------------------------------------------------

class RollupRead:
    """One site's gate read as the requests git makes for ``SummaryRefs.reports``' fetch of the
    roll-up (capabilities, ``ls-refs`` for the one ref, and when it moved a fetch of the new tip
    with the site's last one as ``have``), so the server does all a real site makes it do and the
    simulator spends no git process on it. Returns when the read was done."""

    def __init__(self, url: str, ref: str):
        parts = urlsplit(url)
        self.host, self.port, self.path, self.ref = parts.hostname, parts.port, parts.path, ref
        self.tip: str | None = None
        self.bytes = 0

    def __call__(self) -> None:
        head = [pkt("object-format=sha1\n"), b"0001"]
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            self.bytes += len(upload_pack(connection, self.path, None))
            listed = upload_pack(connection, self.path, b"".join([pkt("command=ls-refs\n"), *head,
                                                                  pkt(f"ref-prefix {self.ref}\n"), b"0000"]))
            self.bytes += len(listed)
            tip = next((line.split()[0].decode() for line in pkt_lines(listed) if line.split()[1:2] == [self.ref.encode()]),
                       None)
            if tip is not None and tip != self.tip:
                have = [pkt(f"have {self.tip}\n")] if self.tip else []
                self.bytes += len(upload_pack(connection, self.path, b"".join([
                    pkt("command=fetch\n"), *head, pkt("thin-pack\n"), pkt("ofs-delta\n"), pkt(f"want {tip}\n"),
                    *have, pkt("done\n"), b"0000"])))
            self.tip = tip
        finally:
            connection.close()


class SharedView:
    """The roll-up's reports as the simulator's sites decide on them: one real ``RollUps``
    reader, fetched again whenever a site's own read ended after its last fetch began, so every
    decision is on a view at least as new as the deciding site's read. One ``decide_gate`` per wave
    per view and second (on 1 000 sites a call is ~10 ms of Python, which a real fleet spends on
    its own machines); the decision depends on the site through its wave alone."""

    def __init__(self, url: str, scratch: Path, names: list[str]):
        source = GitSource(url, "main", scratch)
        self.reader, self.cache = RollUps(source), StatusRefs(source)
        self.objects = Path(source.git.git_dir) / "objects"  # the sites' caches borrow the roll-ups it fetched
        self.tip: str | None = None
        self.labels = dict.fromkeys(names, {})
        self.wave = {site: index for index, members in enumerate(wave_groups(ROLLOUT, GATED, self.labels))
                     for site in members}
        self.lock, self.fetched_at, self.version = threading.Lock(), float("-inf"), 0
        self.reports: dict = {}
        self.decided: dict[tuple[int, int, int], object] = {}

    def decide(self, site: str, read_done: float, now: datetime):
        """The site's gate decision, and the roll-up's tip it was taken on."""
        with self.lock:
            if self.fetched_at < read_done:
                self.fetched_at = time.monotonic()
                self.reports, self.version = self.reader.reports(GATED), self.version + 1
                self.tip = self.cache.cached_tip(rollup_ref(GATED))
            key = (self.version, self.wave[site], int(now.timestamp()))
            if key not in self.decided:
                self.decided[key] = decide_gate(ROLLOUT, GATED, ROLLOUT_ID, site, self.labels, self.reports,
                                                now.replace(microsecond=0))
            return self.decided[key], self.tip

    def close(self) -> None:
        self.reader.close()


@dataclass
class Rollout3:
    sites: int
    seconds: float  # from the start to the last site's success written (inf: not within the timeout)
    wave_opened: dict[str, float]  # seconds from the start at which each wave's first site moved
    reads: int
    writes: int
    retried: int  # writes that failed (a Transient error, as the agent's reconcile would): written again a tick later
    read_p99: float
    write_p99: float
    server_cpu: float
    peak_cores: float
    bytes_per_read: float


def success_record(site: str, now: datetime) -> StatusRecord:
    """What a site that moved reports: the rollout's version, converged since ``now``."""
    status = DeploymentStatus(model=GATED, state="success", version="3.3.0", activeVersion="3.3.0",
                              previousVersion="3.2.0", rollout=ROLLOUT_ID, reason="Converged", since=now)
    return StatusRecord(site=site, observedCommit="b" * 40, appliedCommit="b" * 40, state="success",
                        reason="Converged", deployments={GATED: status}, agentVersion="0.1.0", writtenAt=now)


class SimSite:
    def __init__(self, name: str, shard: int, status_url: str, summaries_url: str, scratch: Path, view: SharedView):
        self.name, self.shard, self.moved = name, shard, False
        self.status = StatusRefs(GitSource(status_url, "main", scratch / "status"))
        summaries = GitSource(summaries_url, "main", scratch / "summaries")
        self.summaries = SummaryRefs(summaries, self.status)
        self.read = RollupRead(summaries_url, rollup_ref(GATED))
        self.rollup_ref = Path(summaries.git.git_dir) / rollup_ref(GATED)
        (Path(summaries.git.git_dir) / "objects" / "info" / "alternates").write_text(f"{view.objects}\n")
        summaries.close()

    def as_read(self, tip: str | None) -> None:
        """The site's cache as its gate read would leave it (the agent's read fetches the roll-up
        into the cache its write then leases): the roll-up at ``tip``, its objects borrowed from the
        shared view's cache, so the write fetches nothing first, as the agent's does not."""
        if tip is not None:
            self.rollup_ref.parent.mkdir(parents=True, exist_ok=True)
            self.rollup_ref.write_text(f"{tip}\n")

    def record(self, now: datetime) -> StatusRecord:
        return success_record(self.name, now)

    def close(self) -> None:
        """Stops the caches' git processes (a cat-file each, reopened when next used): an agent
        keeps its own running, but 10 000 simulated sites' would pass the open-files limit."""
        self.status.close()
        self.summaries.close()


def three_wave_rollout(server: object, names: list[str], status_url: Callable[[int], str], summaries_url: str,
                       scratch: Path, workers: int, timeout: float, seed: int) -> Rollout3:
    """Every site from a random phase, then every ROLLOUT_INTERVAL ± 10 %, until all report success."""
    rng = random.Random(seed)
    shard = shard_numbers(names)
    view = SharedView(summaries_url, scratch / "view", names)
    sites = [SimSite(name, shard[name], status_url(shard[name]), summaries_url, scratch / name, view) for name in names]
    def learn_own(site: SimSite) -> None:
        site.status.read_own(site.name)
        site.close()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(learn_own, sites))
    lock, reads, writes, opened, moved_at, retried = threading.Lock(), [], [], {}, [], []
    start = time.monotonic() + 1.0
    due = [(start + rng.uniform(0, ROLLOUT_INTERVAL), n) for n in range(len(sites))]
    heapq.heapify(due)
    bytes_before = server.bytes_sent  # type: ignore[attr-defined]

    def tick(index: int) -> None:
        try:
            watch(sites[index])
        finally:
            sites[index].close()

    def watch(site: SimSite) -> None:
        """One watching interval of one site: read the roll-up, decide, move once it may."""
        began = time.monotonic()
        site.read()
        done = time.monotonic()
        with lock:
            reads.append(done - began)
        if site.moved:
            site.summaries.roll_up_kept_out(GATED)  # as the agent's read does, when others kept its entry out
            return
        now = datetime.now(UTC)
        decision, tip = view.decide(site.name, done, now)
        if decision.kind == "proceed":
            began, record = time.monotonic(), site.record(now)
            site.as_read(tip)
            try:
                site.summaries.write(record, {GATED: site.shard})  # the record and its entry in one push, then the roll-up
            except Transient:  # as the agent: the reconcile fails, the next one writes again
                with lock:
                    retried.append(site.name)
                return
            site.moved = True
            with lock:
                writes.append(time.monotonic() - began)
                moved_at.append(time.monotonic() - start)
                opened.setdefault(decision.wave, time.monotonic() - start)

    sampler = CpuSampler(server, 1.0)
    running: dict = {}
    with ThreadPoolExecutor(workers) as pool:
        while len(moved_at) < len(sites) and time.monotonic() < start + timeout:
            for future, index in list(running.items()):
                if future.done():
                    del running[future]
                    future.result()
                    heapq.heappush(due, (time.monotonic() + ROLLOUT_INTERVAL * rng.uniform(0.9, 1.1), index))
            if due and due[0][0] <= time.monotonic() and len(running) < workers:  # late ticks start late
                index = heapq.heappop(due)[1]
                running[pool.submit(tick, index)] = index
                continue
            time.sleep(0.01)
    cpu, peak = sampler.finish()
    sent = server.bytes_sent - bytes_before  # type: ignore[attr-defined]
    for site in sites:
        site.close()
    view.close()
    done = len(moved_at) == len(names)
    return Rollout3(len(names), max(moved_at) if done else float("inf"), opened, len(reads), len(writes), len(retried),
                    quantile(reads, 99), quantile(writes, 99), cpu, peak, sent / max(len(reads) + len(writes), 1))
