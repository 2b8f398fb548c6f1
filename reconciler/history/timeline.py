"""The audit's answers, from the fleet trail (reconciler.history.audit) and the status archive
(reconciler.history.archive): the site timelines and the fleet at a moment (pure), the two questions
answered from a repository (audit_trail, audit_at), and the repository opened for them (open_fleet).

A timeline interval is a stretch of a site's records in which one deployment kept its served
version (``activeVersion``), desired version and state: [from, to), ``to`` null while it lasts. The
record in force at a moment is the newest record on the site's ref whose ``writtenAt`` is at or
before it; a site with none is ``unknown``.

JSON (``reconciler audit --format json``), stable. Times are ISO 8601 with an offset; a version
that a flag picks reads ``flag:KEY``.
  AuditTrail:  {"kind": "AuditTrail", "repo", "branch", "head", "changes": [Change],
                "timelines": [Interval], "invalidCommits": [{"commit", "committerDate", "author",
                "subject", "errors", "firstError"}]}
  Change:      {"deployment", "commit", "author", "authorDate", "committer", "committerDate",
                "subject", "message", "signature": {"state", "signer", "key"}, "model",
                "versionFrom", "versionTo", "changed": [aspect]}
  Interval:    {"site", "deployment", "from", "to", "version", "desiredVersion", "state", "wave",
                "failureKind" (on failure or error: "version" evidence or "site" condition, else null),
                "observedCommit", "statusCommit"}
  FleetAt (``--at``): {"kind": "FleetAt", "at", "repo", "branch", "fleetCommit", "desired":
                {deployment: version}, "sites": [{"site", "state" ("unknown": no record by then),
                "writtenAt", "statusCommit", "observedCommit", "deployments": {name: {"version",
                "desiredVersion", "state", "wave", "failureKind"}}}]}"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from reconciler import reasons
from reconciler.errors import ReconcilerError, Stalled, UsageError
from reconciler.gitdoor.git import GitError
from reconciler.gitdoor.source import GitSource, open_location
from reconciler.history.archive import StatusArchive
from reconciler.history.audit import (
    DeploymentChange,
    InvalidCommit,
    as_utc,
    fleet_commit_at,
    fleet_trail,
    version_text,
)
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.loader import load_tree
from reconciler.settings import CommitPolicy
from reconciler.status.record import BatchRunSummary, DeploymentStatus, StatusRecord
from reconciler.status.signed import Ignored, RecordCheck

UNKNOWN = "unknown"


# --- timelines and the fleet at a moment (pure) ---------------------------------------------------

@dataclass(frozen=True)
class Interval:
    site: str
    deployment: str
    start: datetime
    end: datetime | None  # None: still so at the newest record
    version: str | None  # what the site served (activeVersion)
    desired: str | None  # what the fleet asked of it
    state: str
    wave: str | None
    observed_commit: str | None
    status_commit: str  # the record that began the interval
    failure_kind: str | None = None  # on failure or error: version evidence or a site condition

    def to_json(self) -> dict[str, Any]:
        return {"site": self.site, "deployment": self.deployment, "from": self.start.isoformat(),
                "to": self.end.isoformat() if self.end else None, "version": self.version,
                "desiredVersion": self.desired, "state": self.state, "wave": self.wave,
                "failureKind": self.failure_kind, "observedCommit": self.observed_commit,
                "statusCommit": self.status_commit}


def site_timeline(site: str, history: Sequence[tuple[str, StatusRecord]]) -> list[Interval]:
    """PURE: the site's intervals per deployment, in order of their start."""
    current: dict[str, Interval] = {}
    closed: list[Interval] = []
    for commit, record in history:
        written = as_utc(record.writtenAt)
        for name, interval in list(current.items()):
            status = record.deployments.get(name)
            if status is None or (status.activeVersion, status.version, status.state) != \
                    (interval.version, interval.desired, interval.state):
                closed.append(replace(interval, end=written))
                del current[name]
        for name, status in record.deployments.items():
            if name not in current:
                current[name] = Interval(site, name, written, None, status.activeVersion, status.version,
                                         status.state, status.wave, record.observedCommit, commit, status.failureKind)
    return sorted([*closed, *current.values()], key=lambda i: (i.start, i.deployment))


@dataclass(frozen=True)
class BatchRun:
    site: str
    deployment: str
    run: BatchRunSummary
    status_commit: str  # the first record that carried this run

    def to_json(self) -> dict[str, Any]:
        return {"site": self.site, "deployment": self.deployment, "statusCommit": self.status_commit,
                **self.run.model_dump(mode="json")}


def site_batch_runs(site: str, history: Sequence[tuple[str, StatusRecord]]) -> list[BatchRun]:
    """PURE: each batch run the site's records carried (a record carries its deployment's newest
    run, so a run is the first record that shows it), in order of their start."""
    runs: dict[tuple[str, datetime], BatchRun] = {}
    for commit, record in history:
        for name, status in record.deployments.items():
            if status.lastBatchRun is not None:
                runs.setdefault((name, as_utc(status.lastBatchRun.started)), BatchRun(site, name, status.lastBatchRun,
                                                                                      commit))
    return [runs[key] for key in sorted(runs, key=lambda key: (key[1], key[0]))]


def serving_at(history: Sequence[tuple[str, StatusRecord]], at: datetime) -> tuple[str, StatusRecord] | None:
    """PURE: the record in force at ``at``: the newest one written at or before it."""
    return next(((c, r) for c, r in reversed(history) if as_utc(r.writtenAt) <= at), None)


@dataclass(frozen=True)
class SiteAt:
    site: str
    status_commit: str | None
    record: StatusRecord | None  # None: the site had written no record by then
    deployments: dict[str, DeploymentStatus] = field(default_factory=dict)  # of the record, maybe filtered

    @property
    def state(self) -> str:
        return self.record.state if self.record else UNKNOWN

    def to_json(self) -> dict[str, Any]:
        record = self.record
        return {"site": self.site, "state": self.state,
                "writtenAt": as_utc(record.writtenAt).isoformat() if record else None,
                "statusCommit": self.status_commit, "observedCommit": record.observedCommit if record else None,
                "deployments": {name: {"version": status.activeVersion, "desiredVersion": status.version,
                                       "state": status.state, "wave": status.wave, "failureKind": status.failureKind}
                                for name, status in sorted(self.deployments.items())}}


def fleet_at(histories: Mapping[str, Sequence[tuple[str, StatusRecord]]], inventory: Iterable[str], at: datetime,
             deployments: Collection[str] | None = None) -> list[SiteAt]:
    """PURE: every site of the inventory or with a history, with its record in force at ``at``
    (and of that, ``deployments`` only, when given)."""
    rows = []
    for site in sorted(set(inventory) | set(histories)):
        found = serving_at(histories.get(site, ()), at)
        if found is None:
            rows.append(SiteAt(site, None, None))
            continue
        commit, record = found
        cells = {name: status for name, status in record.deployments.items()
                 if deployments is None or name in deployments}
        rows.append(SiteAt(site, commit, record, cells))
    return rows


# --- the two questions, answered from a repository ----------------------------------------------

@dataclass(frozen=True)
class AuditTrail:
    repo: str
    branch: str
    head: str
    changes: list[DeploymentChange]
    invalid: list[InvalidCommit]
    intervals: list[Interval]
    ignored: list[Ignored] = field(default_factory=list)  # status records whose signatures do not verify
    batch_runs: list[BatchRun] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "AuditTrail", "repo": self.repo, "branch": self.branch, "head": self.head,
                "changes": [change.to_json() for change in self.changes],
                "timelines": [interval.to_json() for interval in self.intervals],
                "invalidCommits": [bad.to_json() for bad in self.invalid],
                "ignoredStatusRecords": [record.to_json() for record in self.ignored],
                "batchRuns": [run.to_json() for run in self.batch_runs]}


@dataclass(frozen=True)
class FleetAt:
    repo: str
    branch: str
    at: datetime
    fleet_commit: str | None  # the branch's commit at that moment
    desired: dict[str, str]  # deployment -> version the fleet asked for then
    sites: list[SiteAt]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "FleetAt", "at": self.at.isoformat(), "repo": self.repo, "branch": self.branch,
                "fleetCommit": self.fleet_commit, "desired": self.desired,
                "sites": [site.to_json() for site in self.sites]}


def audit_trail(location: str, branch: str, policy: CommitPolicy | None = None, site: str | None = None,
                deployment: str | None = None) -> AuditTrail:
    """The deployment changes and the site timelines (of ``site`` only, of ``deployment`` only)."""
    with open_fleet(location, branch) as fleet:
        trail = fleet_trail(fleet.source, fleet.head, policy)
        archive = fleet.status({site} if site else None, trail.latest)
        sites = [*(trail.latest.sites if trail.latest else ()), *archive.sites]
        _require_known(site, sites, deployment, [c.deployment for c in trail.changes], archive)
        histories = archive.histories()
    intervals = [interval for name, history in sorted(histories.items()) for interval in site_timeline(name, history)
                 if deployment in (None, interval.deployment)]
    changes = [change for change in trail.changes if deployment in (None, change.deployment)]
    runs = [run for name, history in sorted(histories.items()) for run in site_batch_runs(name, history)
            if deployment in (None, run.deployment)]
    return AuditTrail(shown_location(location), branch, fleet.head, changes, trail.invalid, intervals,
                      archive.check.ignored if archive.check else [], runs)


def audit_at(location: str, branch: str, at: datetime, site: str | None = None,
             deployment: str | None = None) -> FleetAt:
    """What every site (or ``site``) served at ``at``, and what the branch asked for then. The
    inventory is the branch's Sites at that moment, plus every site with a status ref."""
    only = {deployment} if deployment else None
    at = as_utc(at)
    with open_fleet(location, branch) as opened:
        fleet_commit = fleet_commit_at(opened.source, opened.head, at)
        fleet = load_tree(opened.source.files(fleet_commit)).repo if fleet_commit else None
        archive = opened.status({site} if site else None, fleet)
        inventory = list(fleet.sites) if fleet else []
        asked = {name: version_text(d.spec.version) for name, d in (fleet.deployments if fleet else {}).items()}
        _require_known(site, [*inventory, *archive.sites], deployment, asked, archive)
        histories = archive.histories_as_of(at)
    rows = fleet_at(histories, [s for s in inventory if site in (None, s)], at, only)
    desired = {name: version for name, version in asked.items() if only is None or name in only}
    return FleetAt(shown_location(location), branch, at, fleet_commit, desired, rows)


def _require_known(site: str | None, sites: Iterable[str], deployment: str | None, deployments: Iterable[str],
                   archive: StatusArchive) -> None:
    """A name that nothing knows is a typo: say so rather than answer about nothing."""
    if site and site not in set(sites):
        raise UsageError(f"site {site!r}: not in the fleet and no status ref for it")
    reported = {name for record in archive.latest.values() for name in record.deployments}
    if deployment and deployment not in set(deployments) | reported:
        raise UsageError(f"deployment {deployment!r}: not in the fleet's history and not in any status record")


@dataclass(frozen=True)
class OpenFleet:
    source: GitSource
    head: str  # the branch's commit
    in_place: bool  # a local repository, read where it is: its refs are there, nothing to fetch

    def status(self, sites: Collection[str] | None = None, fleet: FleetRepo | None = None) -> StatusArchive:
        """The status records, those that do not verify against ``fleet``'s Site documents ignored
        (without a fleet that loads, unsigned mode: every record is read)."""
        return StatusArchive(self.source, sites, fetch=not self.in_place, check=RecordCheck.of_fleet(fleet))


@contextmanager
def open_fleet(location: str, branch: str) -> Iterator[OpenFleet]:
    """The fleet repo at ``location`` and its branch's head. A local repository is read in place,
    and only read: nothing is fetched into it or written there. A URL is fetched into a
    throwaway cache."""
    with open_location(location, branch) as (source, in_place):
        try:
            head = _local_head(source, branch) if in_place else source.fetch()
        except ReconcilerError as error:
            raise UsageError(f"cannot read {location}: {error}") from error
        yield OpenFleet(source, head, in_place)


def _local_head(source: GitSource, branch: str) -> str:
    try:
        return source.git.resolve_commit(f"refs/heads/{branch}")
    except GitError:
        raise Stalled(reasons.BranchNotFound, f"{source.url} has no branch {branch!r}") from None


def shown_location(location: str) -> str:
    """A repository location fit to print: a URL loses any user name or token in it."""
    parts = urlsplit(location)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return location


def parse_time(text: str) -> datetime:
    """ISO 8601 (``2024-05-01T12:00:00Z``, ``2024-05-01T14:00+02:00``) or ``YYYY-MM-DD HH:MM``;
    without an offset, UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{text!r} is not a time (want ISO 8601 or 'YYYY-MM-DD HH:MM', UTC unless an offset "
                         "is given)") from None
    return as_utc(moment)
