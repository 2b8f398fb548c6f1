"""Tiny in-memory stand-ins for the agent's collaborators, for unit tests that run in milliseconds
without git, HTTP or onnxruntime (as httpx's ``MockTransport`` and python-tuf's repository
simulator): a fleet source, a status channel, the vetting of new bytes and a runtime. Each one
records what it was asked and can be told to fail. ``fleet_files`` writes a one-site fleet."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from reconciler import reasons
from reconciler.agent.apply import Applier
from reconciler.agent.loop import Agent
from reconciler.agent.statedir import StateDir
from reconciler.delivery.plan import Target
from reconciler.errors import ReconcilerError, Stalled
from reconciler.ingest.artifacts import ArtifactStore, Ingested
from reconciler.ingest.fetch import RepoRoot
from reconciler.manifests.loader import RepoFile
from reconciler.manifests.types import Digest
from reconciler.monitoring.evaluation import EvaluationSummary
from reconciler.settings import SiteConfig
from reconciler.status.forge import CommitStatus
from reconciler.status.record import StatusRecord

_TIP = object()  # commit(): on top of the branch's head


class MemorySource:
    """The FleetSource protocol (agent/ports.py): a branch of commits, each a dict of file contents.
    ``failing``: what ``remote_head`` raises (an unreachable remote)."""

    cache_dir = Path("memory")

    def __init__(self) -> None:
        self.commits: dict[str, tuple[str | None, dict[str, bytes]]] = {}  # sha -> (parent, files)
        self.head: str | None = None
        self.failing: ReconcilerError | None = None

    def commit(self, files: dict[str, str], parent: str | None | object = _TIP) -> str:
        """A new head with ``files``; ``parent=None`` starts a history that shares nothing (a force-push)."""
        parent = self.head if parent is _TIP else parent
        contents = {path: text.encode() for path, text in files.items()}
        sha = hashlib.sha1(json.dumps([parent, sorted(files.items())]).encode()).hexdigest()
        self.commits[sha] = (parent, contents)
        self.head = sha
        return sha

    def remote_head(self) -> str:
        if self.failing is not None:
            raise self.failing
        if self.head is None:
            raise Stalled(reasons.BranchNotFound, "the in-memory branch has no commit")
        return self.head

    def fetch(self, sha: str | None = None) -> str:
        return sha or self.remote_head()

    def first_parents(self, commit: str, limit: int) -> list[str]:
        chain: list[str] = []
        while commit is not None and len(chain) <= limit:
            chain.append(commit)
            commit = self.commits[commit][0]
        return chain

    def is_ancestor(self, old: str, new: str) -> bool:
        return old in self.first_parents(new, len(self.commits))

    def files(self, sha: str) -> list[RepoFile]:
        return [RepoFile(path, hashlib.sha1(data).hexdigest(), lambda data=data: data)
                for path, data in sorted(self.commits[sha][1].items())]

    def tree(self, sha: str) -> RepoRoot:
        return None  # FakeVetting reads no bytes

    def close(self) -> None:
        pass


class MemoryStatus:
    """The StatusChannel protocol (agent/ports.py): every site's newest record, and each publish
    in order. ``failing``: what ``publish`` raises (a push the remote refuses), after counting the
    attempt in ``refused``."""

    def __init__(self, records: dict[str, StatusRecord] | None = None, mirrors_waves: bool = False) -> None:
        self.records = dict(records or {})
        self.mirrors_waves = mirrors_waves
        self.published: list[tuple[StatusRecord, list[CommitStatus]]] = []
        self.refused: list[StatusRecord] = []
        self.failing: ReconcilerError | None = None
        self.audit_due: datetime | None = None  # set by a test: a batched audit push waits until then
        self.audit_pushes: list[tuple[datetime, bool]] = []  # (now, final) of each push made

    def read_own(self, site: str) -> StatusRecord | None:
        return self.records.get(site)

    def flush_audit(self, now: datetime, final: bool = False) -> datetime | None:
        if self.audit_due is None or (now < self.audit_due and not final):
            return self.audit_due
        self.audit_pushes.append((now, final))
        self.audit_due = None
        return None

    def read_fleet(self, source: object, commit: str, keyring: object = None, gated: object = None
                   ) -> dict[str, StatusRecord]:
        # Records in memory are the test's own: nothing to verify (status/signed.py is tested on its own).
        return dict(self.records)

    def publish(self, record: StatusRecord, waves: list[CommitStatus], gated: object = None) -> None:
        if self.failing is not None:
            self.refused.append(record)
            raise self.failing
        self.published.append((record, waves))
        self.records[record.site] = record

    def close(self) -> None:
        pass


class FakeVetting:
    """The Vetting protocol (agent/apply.py) without bytes: every version passes unless
    ``refused`` (at fetch) or ``invalid`` (at validation) holds an error for it."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.refused: dict[str, ReconcilerError] = {}  # version -> error
        self.invalid: dict[str, ReconcilerError] = {}
        self.validated: list[str] = []  # versions, in order

    def verified(self, target: Target, repo_tree: RepoRoot) -> Ingested:
        if target.version in self.refused:
            raise self.refused[target.version]
        digest = target.artifact.digest
        return Ingested(self.store.path_for(digest), digest, target.artifact.size, False)

    def verified_profile(self, target: Target, repo_tree: RepoRoot) -> Ingested | None:
        return None  # no bytes, so nothing to count drift against

    def validate(self, target: Target, ingested: Ingested) -> None:
        if target.version in self.invalid:
            raise self.invalid[target.version]
        self.validated.append(target.version)

    def evaluate(self, target: Target, model_path: Path, replaced: tuple[str, Path] | None,
                 now: datetime) -> EvaluationSummary | None:
        return None  # no bytes to score


class FakeRuntime:
    """The Runtime protocol (agent/apply.py): what it serves, every call in order, and ``failing``:
    method name -> the error that method raises."""

    def __init__(self) -> None:
        self.active: dict[str, str] = {}  # deployment -> version
        self.canary: dict[str, tuple[str, int]] = {}  # deployment -> (version, weight)
        self.calls: list[tuple] = []
        self.failing: dict[str, ReconcilerError] = {}
        self.flags = None
        self.batching: dict = {}  # deployment -> BatchPolicy

    def _called(self, method: str, *args: object) -> None:
        if method in self.failing:
            raise self.failing[method]
        self.calls.append((method, *args))

    def activate(self, deployment, model, version, model_path, interface, *, digest=None) -> None:
        self._called("activate", deployment, version)
        self.active[deployment] = version

    def start_canary(self, deployment, model, version, model_path, interface, *, digest, weight=0,
                     mirror=False) -> None:
        self._called("start_canary", deployment, version, weight)
        self.canary[deployment] = (version, weight)

    def set_weight(self, deployment, weight) -> None:
        self._called("set_weight", deployment, weight)
        self.canary[deployment] = (self.canary[deployment][0], weight)

    def set_mirror(self, deployment, mirror) -> None:
        self._called("set_mirror", deployment, mirror)

    def promote(self, deployment) -> None:
        self._called("promote", deployment)
        self.active[deployment] = self.canary.pop(deployment)[0]

    def abort_canary(self, deployment) -> None:
        self._called("abort_canary", deployment)
        self.canary.pop(deployment, None)

    def remove(self, deployment) -> None:
        self._called("remove", deployment)
        self.active.pop(deployment, None)

    def expect(self, deployments) -> None:
        self._called("expect", list(deployments))

    def set_flags(self, flags, site_context) -> None:
        self.flags = flags

    def set_batching(self, policies) -> None:
        self.batching = dict(policies)

    def execution_provider(self, deployment) -> str | None:
        return "CPUExecutionProvider" if deployment in self.active else None


def fleet_files(version: str = "1.0.0", site: str = "store-1", canary: list[dict] | None = None,
                versions: tuple[str, ...] = ("1.0.0", "1.1.0", "1.2.0"), **spec: object) -> dict[str, str]:
    """A fleet of one site and one deployment ``d`` of model ``m`` at ``version``; ``canary``: its
    steps, ``spec``: more of its spec (rollout, ...). Each version has its own digest."""
    model_versions = [{"version": v, "artifacts": [{"uri": f"models/m/{v}.onnx", "digest": _digest(v), "size": 10,
                                                     "signature": {"uri": f"models/m/{v}.onnx.sig"}}]}
                      for v in versions]
    deployment_spec = {"model": "m", "version": version, **({"canary": {"steps": canary}} if canary else {}), **spec}
    documents = {
        "fleet.yaml": {"kind": "Fleet", "metadata": {"name": "f"}, "spec": {}},
        f"sites/{site}.yaml": {"kind": "Site", "metadata": {"name": site, "labels": {"tier": "store"}}},
        "models/m/model.yaml": {"kind": "Model", "metadata": {"name": "m"}, "spec": {
            "interface": {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 2]}],
                          "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 1]}]},
            "versions": model_versions}},
        "deployments/d.yaml": {"kind": "Deployment", "metadata": {"name": "d"}, "spec": deployment_spec},
    }
    return {path: json.dumps({"apiVersion": "reconciler/v1", **doc}) for path, doc in documents.items()}


def _digest(version: str) -> str:
    return Digest.of(hashlib.sha256(version.encode()))


@dataclass
class FakeSite:
    """An agent wired to the fakes above, and the fakes, for a test to drive and inspect."""

    agent: Agent
    source: MemorySource
    status: MemoryStatus
    vetting: FakeVetting
    runtime: FakeRuntime
    applier: Applier


def fake_site(state: Path, clock: Callable[[], datetime], site: str = "store-1", runtime: bool = True,
              source: MemorySource | None = None, **settings: object) -> FakeSite:
    """The agent of ``site`` with its state directory at ``state``, every collaborator a fake
    (``source``: a branch another fake site reads too)."""
    source, status, fake_runtime = source or MemorySource(), MemoryStatus(), FakeRuntime()
    state_dir = StateDir(state)
    store = ArtifactStore(state)
    vetting = FakeVetting(store)
    applier = Applier(state_dir, store, vetting, fake_runtime if runtime else None)
    config = SiteConfig(site=site, repo="memory", state=state, **settings)
    agent = Agent(config, source=source, status=status, applier=applier,
                  runtime=fake_runtime if runtime else None, clock=clock)
    return FakeSite(agent, source, status, vetting, fake_runtime, applier)
