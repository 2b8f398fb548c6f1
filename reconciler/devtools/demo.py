"""``reconciler demo``: a small fleet on this machine. The example fleet repo is pushed to a bare
repo served over git's smart-HTTP protocol on loopback; several site agents start as real
processes, converge, serve real predictions; then a commit bumps a model version and the sites
move. Everything stops by itself at the end unless --keep-running."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx

from reconciler import reasons
from reconciler.delivery.plan import rollout_of
from reconciler.devtools.githttp import GitHttpServer, init_bare_repo, run_git
from reconciler.devtools.processes import free_port, stop_all
from reconciler.gitdoor.git import ls_remote
from reconciler.gitdoor.source import GitSource
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.loader import load_directory
from reconciler.status.gitref import StatusRefs
from reconciler.status.matrix import build_matrix, render_text
from reconciler.status.record import StatusRecord

EXAMPLE_REPO = Path(__file__).resolve().parents[1] / "example_fleet"  # example-fleet-repo/, shipped in the wheel
CONVERGE_TIMEOUT = 180.0
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Release Engineer", "GIT_AUTHOR_EMAIL": "release@example.com",
                "GIT_COMMITTER_NAME": "Release Engineer", "GIT_COMMITTER_EMAIL": "release@example.com"}


def say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(sites: int, workdir: Path | None, keep_running: bool) -> int:
    fleet = load_directory(EXAMPLE_REPO).repo
    chosen = _choose_sites(fleet, sites)
    with ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reconciler-demo-")))
        root.mkdir(parents=True, exist_ok=True)
        say(f"reconciler demo: {len(chosen)} sites converge from a local Git repo (files in {root})\n")

        say("1. The fleet repo")
        bare = init_bare_repo(root / "srv", "fleet", source_dir=EXAMPLE_REPO)
        server = stack.enter_context(GitHttpServer(root / "srv"))
        url = server.url("fleet")
        say(f"   example-fleet-repo/ pushed to {bare}, served over git smart-HTTP at {url}")
        say(f"   {len(fleet.sites)} sites, {len(fleet.models)} models, {len(fleet.deployments)} deployments")
        _compress_time(root, url)
        say("   demo commit: bake times and canary steps shortened to seconds, maintenance windows lifted,")
        say("   so that a rollout of minutes fits in the demo (see `git log` of the repo)\n")

        say("2. Starting site agents (each: its own process, state directory and inference port)")
        agents = {site: _start_agent(stack, root, url, site) for site in chosen}
        for site, (port, _) in agents.items():
            labels = fleet.sites[site].metadata.labels
            say(f"   {site:<22} http://127.0.0.1:{port}  {' '.join(f'{k}={v}' for k, v in sorted(labels.items()))}")
        refs = StatusRefs(stack.enter_context(GitSource(url, "main", root / "observer.git")))
        head = _remote_head(url)
        say(f"\n3. Every site converges on {head[:12]}, wave after wave (read from refs/reconciler/status/<site>)")
        started = time.monotonic()
        records = _await_convergence(refs, agents, head, started, watch=None)
        _print_records(records)

        say("\n4. Real predictions from each site (Open Inference Protocol v2)")
        _infer_everywhere(fleet, records, agents)

        bump = _pick_bump(fleet, records)
        if bump is None:
            say("\n(no deployment has a newer version to roll out: the demo stops here)")
            return 0
        deployment, old, new = bump
        say(f"\n5. A release engineer bumps {deployment} from {old} to {new} and pushes. Live traffic flows to every")
        say("   site; each wave runs the canary steps (weights, pauses, analysis of the canary's own metrics)")
        say("   and the next wave starts only once the earlier ones report healthy and have baked:")
        with _Traffic(fleet, records, agents, deployment):
            head = _commit_bump(root, url, fleet, deployment, old, new)
            say(f"   new head {head[:12]}")
            started = time.monotonic()
            records = _await_convergence(refs, agents, head, started, watch=deployment)
        _print_records(records)

        say("\n6. Predictions after the change")
        _infer_everywhere(load_directory(root / "clone").repo, records, agents)

        first = next(site for site, record in sorted(records.items()) if deployment in record.deployments)
        say(f"\n7. The audit trail of {first}: its status ref history, one commit per change")
        log = run_git(None, "--git-dir", str(bare), "log", "--format=%h %ad %s", "--date=format:%H:%M:%S",
                      f"refs/reconciler/status/{first}")
        say("\n".join("   " + line for line in log.splitlines()))

        say("\n8. `reconciler status`: the fleet matrix, from Git alone")
        matrix = build_matrix(refs.read_all(), fleet.sites, datetime.now(UTC), fleet.spec.staleAfter)
        say("\n".join("   " + line for line in render_text(matrix).splitlines()))

        moved = sum(1 for r in records.values() if r.deployments.get(deployment, None) and
                    r.deployments[deployment].activeVersion == new)
        stopped = sorted({r.deployments[deployment].reason for r in records.values()
                          if deployment in r.deployments and r.deployments[deployment].state in ("failure", "aborted")})
        on_old = sum(1 for r in records.values() if deployment in r.deployments and
                     r.deployments[deployment].activeVersion == old)
        outcome = (f"the rollout was stopped ({', '.join(stopped)}); {on_old} sites serve {old}" if stopped else
                   _rolled_out(fleet, deployment, old, new, moved))
        say(f"\nSummary: {len(agents)} sites converged from Git and served real predictions; {outcome}, "
            f"{time.monotonic() - started:.0f}s after the push.")
        if keep_running:
            say("The fleet keeps running (Ctrl-C stops it). Push to the repo and watch the sites follow:")
            say(f"   git clone {url}")
            _wait_for_interrupt()
        say("Stopping the site agents.")
    return 0


def _rolled_out(fleet: FleetRepo, deployment: str, old: str, new: str, moved: int) -> str:
    """What the bump did, claiming waves and canaries only where the deployment has them."""
    if moved == 0:
        return f"none of them moved {deployment} to {new}"
    spec = fleet.deployments[deployment].spec
    how = [what for what, present in (("in waves", rollout_of(fleet, fleet.deployments[deployment]) is not None),
                                      ("with in-site canaries", spec.canary is not None and spec.canary.steps))
           if present]
    return f"{moved} of them rolled {deployment} {old} -> {new} out" + "".join(f" {h}" for h in how)


def _compress_time(root: Path, url: str) -> None:
    """Minutes of bake time and canary steps become seconds, and every site may activate now."""
    clone = root / "clone"
    run_git(None, "clone", "-q", url, str(clone), env=GIT_IDENTITY)
    for path in sorted(clone.rglob("*.yaml")):
        text = path.read_text()
        text = re.sub(r"(?m)^(\s+(?:bakeTime|duration|window):\s*)\S+", r"\g<1>4s", text)
        text = re.sub(r"(?m)^(\s+minRequests:\s*)\d+", r"\g<1>5", text)  # the traffic of 4 s, not of minutes
        text = re.sub(r"(?m)^(\s+maxLatencyP99:\s*)\S+", r"\g<1>1s", text)  # twelve sites share two cores here
        text = re.sub(r"(?ms)^  maintenanceWindows:\n(?:    .*\n|\s*\n)*", "", text)
        path.write_text(text)
    run_git(clone, "commit", "-qam", "demo: compress time (bake 4s, canary steps 4s with 5 requests minimum, "
            "p99 up to 1s, no maintenance windows)", env=GIT_IDENTITY)
    run_git(clone, "push", "-q", "origin", "HEAD:main", env=GIT_IDENTITY)


class _Traffic:
    """Requests to every site that serves ``deployment``, so its canaries have something to judge."""

    def __init__(self, fleet: FleetRepo, records: dict[str, StatusRecord], agents: dict, deployment: str):
        status = next(r.deployments[deployment] for r in records.values() if deployment in r.deployments)
        model = fleet.models[status.model]
        self.body = {"inputs": _inputs_of(model, model.spec.version(status.activeVersion).validation[0])}
        urls = [f"http://127.0.0.1:{agents[s][0]}/v2/models/{deployment}/infer"
                for s, r in sorted(records.items()) if deployment in r.deployments]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(url,), daemon=True) for url in urls]

    def _run(self, url: str) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.wait(0.02):
                try:
                    client.post(url, json=self.body)
                except httpx.HTTPError:
                    pass

    def __enter__(self) -> _Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def _choose_sites(fleet: FleetRepo, count: int | None) -> list[str]:
    """Sites that may activate at any hour first (the others wait for their maintenance window,
    which the demo shows as 'pending'), spread over tiers and regions."""
    count = len(fleet.sites) if count is None else count
    by_group: dict[tuple[bool, str, str], list[str]] = {}
    for name in sorted(fleet.sites):
        site = fleet.sites[name]
        labels = site.metadata.labels
        key = (bool(site.spec.maintenanceWindows), labels.get("tier", ""), labels.get("region", ""))
        by_group.setdefault(key, []).append(name)
    chosen: list[str] = []
    while len(chosen) < min(count, len(fleet.sites)):
        for group in sorted(by_group):
            if by_group[group] and len(chosen) < count:
                chosen.append(by_group[group].pop(0))
    return chosen


def _start_agent(stack: ExitStack, root: Path, url: str, site: str) -> tuple[int, subprocess.Popen]:
    port = free_port()
    config = root / "sites" / site / "site.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f"site: {site}\nrepo: {url}\nstate: state\nlisten: 127.0.0.1:{port}\ninterval: 1s\n"
        f"trustKeys: [{EXAMPLE_REPO / 'keys' / 'demo.pub'}]  # the DEMO key: trusted only here\n"
    )
    log = (config.parent / "agent.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--config", str(config)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(log.close)
    stack.callback(stop_all, [process])
    return port, process


def _remote_head(url: str) -> str:
    return ls_remote(url, "refs/heads/main", timeout=60).split()[0]


def _await_convergence(refs: StatusRefs, agents: dict, head: str, started: float,
                       watch: str | None) -> dict[str, StatusRecord]:
    """Until every site is settled on ``head``; narrates each site's steps of ``watch``."""
    done: dict[str, StatusRecord] = {}
    seen: dict[str, tuple] = {}
    deadline = started + CONVERGE_TIMEOUT
    while len(done) < len(agents):
        if time.monotonic() > deadline:
            missing = sorted(set(agents) - set(done))
            raise SystemExit(f"demo: sites did not converge in {CONVERGE_TIMEOUT:.0f}s: {missing}; "
                             f"see their agent.log files")
        for site, (_, process) in agents.items():
            if process.poll() is not None and site not in done:
                raise SystemExit(f"demo: the agent of {site} exited with {process.returncode}; see its agent.log")
        for site, record in sorted(refs.read_all().items()):
            if site not in agents or site in done:
                continue
            status = record.deployments.get(watch) if watch else None
            if status is not None and record.observedCommit == head:
                step = (status.state, status.reason, tuple(sorted(status.weights.items())))
                if seen.get(site) != step:
                    seen[site] = step
                    weights = " ".join(f"{v}:{w}%" for v, w in sorted(status.weights.items()))
                    say(f"   {time.monotonic() - started:5.1f}s  {site:<20} {status.state:<11} {status.reason:<24} "
                        f"wave={status.wave or '-':<6} {weights}")
            if record.observedCommit == head and _settled(record, watch):
                done[site] = record
                if watch is None:
                    say(f"   {time.monotonic() - started:5.1f}s  {site} converged")
        time.sleep(0.3)
    return done


def _settled(record: StatusRecord, watch: str | None) -> bool:
    """Serving what the commit asks (or waiting for a maintenance window), or done with a rollout
    of ``watch`` that failed or was aborted."""
    def settled(name: str, status) -> bool:
        ended = name == watch and status.state in ("failure", "aborted")
        return ended or status.state == "success" or (status.state == "pending" and status.reason == reasons.OutsideMaintenanceWindow)
    return record.state != "error" and all(settled(name, status) for name, status in record.deployments.items())


def _print_records(records: dict[str, StatusRecord]) -> None:
    say(f"   {'site':<22} {'deployment':<26} {'version':<9} {'previous':<9} {'wave':<8} state")
    for site, record in sorted(records.items()):
        for name, status in sorted(record.deployments.items()):
            say(f"   {site:<22} {name:<26} {status.activeVersion or '-':<9} {status.previousVersion or '-':<9} "
                f"{status.wave or '-':<8} {status.state}")


def _infer_everywhere(fleet: FleetRepo, records: dict[str, StatusRecord], agents: dict) -> None:
    with httpx.Client(timeout=10) as client:
        for site, record in sorted(records.items()):
            port = agents[site][0]
            for name, status in sorted(record.deployments.items()):
                if status.activeVersion is None:
                    continue
                model = fleet.models[status.model]
                case = model.spec.version(status.activeVersion).validation[0]
                reply = client.post(f"http://127.0.0.1:{port}/v2/models/{name}/infer",
                                    json={"inputs": _inputs_of(model, case)})
                reply.raise_for_status()
                body = reply.json()
                output = body["outputs"][0]
                shown = ", ".join(f"{v:.4f}" for v in output["data"][:4])
                say(f"   {site:<22} {name:<26} v{body['model_version']:<8} {output['name']} = [{shown}"
                    f"{', ...' if len(output['data']) > 4 else ''}]")


def _inputs_of(model, case) -> list[dict]:
    """A validation case's inputs as an OIP v2 request body."""
    return [{"name": spec.name, "datatype": _oip_type(spec.dtype), "shape": _shape_of(case.inputs[spec.name]),
             "data": case.inputs[spec.name]} for spec in model.spec.interface.inputs]


def _oip_type(dtype: str) -> str:
    return {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int64": "INT64", "int32": "INT32",
            "int16": "INT16", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}[dtype]


def _shape_of(value) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _pick_bump(fleet: FleetRepo, records: dict[str, StatusRecord]) -> tuple[str, str, str] | None:
    """The most widely served deployment pinned to an older version than its model's newest."""
    served = Counter(name for record in records.values() for name in record.deployments)
    for name, _ in served.most_common():
        spec = fleet.deployments[name].spec
        if not isinstance(spec.version, str):
            continue
        newest = fleet.models[spec.model].spec.versions[-1].version
        if newest != spec.version:
            return name, spec.version, newest
    return None


def _commit_bump(root: Path, url: str, fleet: FleetRepo, deployment: str, old: str, new: str) -> str:
    clone = root / "clone"
    origin = fleet.origins[("Deployment", deployment)]
    path = clone / origin.path
    lines = path.read_text().splitlines(keepends=True)
    pattern = re.compile(rf"^(\s+version:\s*)([\"']?){re.escape(old)}\2\s*$")
    # The first 'version:' line after the document's start: a file may hold several documents.
    index = next((i for i in range(origin.line - 1, len(lines)) if pattern.match(lines[i])), None)
    if index is None:
        raise SystemExit(f"demo: cannot find 'version: {old}' in {path}")
    lines[index] = pattern.sub(rf"\g<1>\g<2>{new}\g<2>", lines[index].rstrip("\n")) + "\n"
    path.write_text("".join(lines))
    run_git(clone, "commit", "-qam", f"Roll out {deployment} {new}", env=GIT_IDENTITY)
    run_git(clone, "push", "-q", "origin", "HEAD:main", env=GIT_IDENTITY)
    return _remote_head(url)


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
