"""History from Git alone, for auditors: who changed which deployment and when (and whether a
trusted signer signed that commit), which version every site served over time, and what the whole
fleet served at any moment. reconciler.history.report shows it (text, JSON, CSV),
reconciler.history.html_report as an HTML page.

Two sources, both in the fleet repository:
- the fleet branch, walked with ``git log --first-parent`` over the manifest files; each commit's
  documents are loaded with one DocumentCache, so only the files a commit changed are parsed;
- the status refs ``refs/reconciler/status/<site>``, read in bulk: one fetch, one ``git log`` over
  every status ref, one ``git cat-file --batch`` for the records needed.

A deployment change is a first-parent commit after which a Deployment reads differently in one of
its ASPECTS: ``model``, ``version``, ``enabled``, ``targets``, ``rollout`` (its own, or the Fleet's
defaultRollout it falls back on), ``canary``, ``artifacts`` (the served version's entry in its
Model, artifacts and validation cases, changed under the same version; every version's when a flag
picks it), ``interface`` (of its Model); or ``created`` / ``deleted``. A Model change that leaves
those alone (a new version added, a new description) changes nothing a site runs and is not
listed. Commits whose manifests do not load are listed apart: sites refuse them, so they change
nothing either. A merge is one change, against its first parent. Signature states are git's
``%G?`` checked against the trust roots given, isolated from the machine's git and gpg config as
the agent's commit policy is: good (by a trusted signer), bad (the commit is not what was signed),
unsigned, unknown-key (valid, by a signer not trusted), expired, revoked, cannot-check.

A timeline interval is a stretch of a site's records in which one deployment kept its served
version (``activeVersion``), desired version and state: [from, to), ``to`` null while it lasts. The
record in force at a moment is the newest record on the site's ref whose ``writtenAt`` is at or
before it; a site with none is ``unknown``. StatusRefs dates each status commit with its record's
``writtenAt``: the point-in-time read uses those dates to read one record per site, checks
``writtenAt`` itself, and reads a site's whole ref where the two disagree.

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

import logging
import os
import subprocess
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from git import GitCommandError

from reconciler.delivery.plan import rollout_of
from reconciler.errors import ReconcilerError, Stalled, UsageError
from reconciler.gitdoor.source import GitSource
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.loader import DocumentCache, LoadResult, RepoFile, load_tree
from reconciler.manifests.models import FlagRef
from reconciler.status.gitref import STATUS_FILE, STATUS_REF_PREFIX, StatusRefs, parse_record
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.trust.commitpolicy import CommitPolicy, signature_verdicts

log = logging.getLogger(__name__)

ASPECTS = ("model", "version", "enabled", "targets", "rollout", "canary", "artifacts", "interface")
SIGNATURE_WORDS = {"N": "unsigned", "B": "bad", "U": "unknown-key", "G": "unknown-key", "X": "expired",
                   "Y": "expired", "R": "revoked", "E": "cannot-check"}
UNKNOWN = "unknown"

_MANIFEST_PATHSPECS = ("*.yaml", "*.yml", "*.flagd.json")  # git pathspecs: '*' crosses directories
_REGULAR_FILE_MODES = ("100644", "100755")  # symlinks and submodules are not fleet files
# Output must not depend on the reader's git config (log.showSignature, diff.renames, colours): the
# user's and the system's are left out, and what a repository read in place may set in its own
# config is overruled on the command line.
_ISOLATED_GIT = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
_PLAIN_LOG = ("--no-show-signature", "--no-color")
_LOG_FORMAT = "%x1e%H%x1f%an <%ae>%x1f%aI%x1f%cn <%ce>%x1f%cI%x1f%B"  # the message last: it may hold anything


# --- what the fleet branch says -----------------------------------------------------------------

@dataclass(frozen=True)
class FleetCommit:
    sha: str
    author: str  # "Name <email>"
    author_date: datetime
    committer: str
    committer_date: datetime
    message: str

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]


@dataclass(frozen=True)
class Signature:
    state: str  # "good" or one of SIGNATURE_WORDS' values
    signer: str  # SSH principal or OpenPGP user id of a trusted signer, else empty
    key: str


@dataclass(frozen=True)
class DeploymentChange:
    deployment: str
    commit: FleetCommit
    model: str
    version_from: str | None
    version_to: str | None
    changed: tuple[str, ...]  # ASPECTS that differ, or ("created",) / ("deleted",)
    signature: Signature | None = None

    def to_json(self) -> dict[str, Any]:
        commit, signature = self.commit, self.signature
        return {
            "deployment": self.deployment, "commit": commit.sha, "author": commit.author,
            "authorDate": commit.author_date.isoformat(), "committer": commit.committer,
            "committerDate": commit.committer_date.isoformat(), "subject": commit.subject, "message": commit.message,
            "signature": {"state": signature.state, "signer": signature.signer, "key": signature.key}
            if signature else None,
            "model": self.model, "versionFrom": self.version_from, "versionTo": self.version_to,
            "changed": list(self.changed),
        }


@dataclass(frozen=True)
class InvalidCommit:
    commit: FleetCommit
    errors: int
    first_error: str

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit.sha, "committerDate": self.commit.committer_date.isoformat(),
                "author": self.commit.author, "subject": self.commit.subject, "errors": self.errors,
                "firstError": self.first_error}


@dataclass(frozen=True)
class FleetTrail:
    changes: list[DeploymentChange]  # oldest first
    invalid: list[InvalidCommit]
    latest: FleetRepo | None  # the fleet at the newest commit that loaded


def version_text(version: str | FlagRef) -> str:
    return version if isinstance(version, str) else f"flag:{version.flag}"


def deployment_aspects(repo: FleetRepo) -> dict[str, dict[str, Any]]:
    """PURE: per deployment, the value of each of its ASPECTS."""
    views = {}
    for name, deployment in repo.deployments.items():
        spec = deployment.spec
        model = repo.models.get(spec.model)
        served: Any = None
        if model is not None:
            served = model.spec.version(spec.version) if isinstance(spec.version, str) else model.spec.versions
        views[name] = {"model": spec.model, "version": version_text(spec.version), "enabled": spec.enabled,
                       "targets": spec.targets, "rollout": rollout_of(repo, deployment), "canary": spec.canary,
                       "artifacts": served, "interface": model.spec.interface if model else None}
    return views


def diff_deployments(before: Mapping[str, dict[str, Any]], after: Mapping[str, dict[str, Any]],
                     commit: FleetCommit) -> list[DeploymentChange]:
    """PURE: the deployment changes ``commit`` made, by name."""
    changes = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if old is None or new is None:
            changed: tuple[str, ...] = ("created",) if old is None else ("deleted",)
        else:
            # A new version has new artifacts, of course: they count only under the same version.
            changed = tuple(aspect for aspect in ASPECTS if old[aspect] != new[aspect]
                            and not (aspect == "artifacts" and old["version"] != new["version"]))
        model = (new or old or {})["model"]
        changes.append(DeploymentChange(name, commit, model, old["version"] if old else None,
                                        new["version"] if new else None, changed))
    return changes


def describe_change(change: DeploymentChange) -> str:
    if change.changed == ("created",):
        return f"created at {change.version_to}"
    if change.changed == ("deleted",):
        return f"deleted (was {change.version_from})"
    return ", ".join(f"version {change.version_from} -> {change.version_to}" if aspect == "version" else aspect
                     for aspect in change.changed)


def fleet_trail(source: GitSource, head: str, policy: CommitPolicy | None = None,
                cache: DocumentCache | None = None) -> FleetTrail:
    """Every deployment change on the first-parent history of ``head``, oldest first, signatures
    judged against ``policy``'s trust roots (none: no signer is trusted)."""
    before: dict[str, dict[str, Any]] = {}
    changes: list[DeploymentChange] = []
    invalid: list[InvalidCommit] = []
    latest = None
    for commit, loaded in fleet_history(source, head, cache or DocumentCache()):
        if loaded.errors:
            invalid.append(InvalidCommit(commit, len(loaded.errors), loaded.errors[0].render()))
            continue
        after = deployment_aspects(loaded.repo)
        changes += diff_deployments(before, after, commit)
        before, latest = after, loaded.repo
    verdicts = signature_verdicts(source, sorted({c.commit.sha for c in changes}), policy)
    signed = []
    for change in changes:
        verdict = verdicts[change.commit.sha]
        state = "good" if verdict.allowed else SIGNATURE_WORDS.get(verdict.letter, "cannot-check")
        signature = Signature(state, verdict.signer if verdict.allowed else "", verdict.key)
        signed.append(replace(change, signature=signature))
    return FleetTrail(signed, invalid, latest)


def fleet_history(source: GitSource, head: str, cache: DocumentCache) -> Iterator[tuple[FleetCommit, LoadResult]]:
    """The first-parent commits of ``head`` that touched a manifest file, oldest first, each with
    its documents. One ``git log --raw`` tells which blobs each commit changed and the tree is
    kept up to date from it, so no commit costs a process of its own."""
    output = source.repo.git.log(*_PLAIN_LOG, "--first-parent", "--reverse", "--root", "--raw", "-z", "--no-renames",
                                 "--no-abbrev", f"--format={_LOG_FORMAT}", head, "--", *_MANIFEST_PATHSPECS,
                                 env=_ISOLATED_GIT, stdout_as_string=False)
    history = list(_parse_raw_log(output))
    # A partial clone gets every manifest version of the history in one fetch, not one per commit.
    source.fetch_missing(blob for _, changed in history for _, blob in changed if blob is not None)
    tree: dict[str, str] = {}  # path -> blob
    for commit, changed in history:
        for path, blob in changed:
            if blob is None:
                tree.pop(path, None)
            else:
                tree[path] = blob
        files = [RepoFile(path, blob, partial(_read_blob, source, blob), source.read_blobs)
                 for path, blob in tree.items()]
        yield commit, load_tree(files, cache)


def _parse_raw_log(output: bytes) -> Iterator[tuple[FleetCommit, list[tuple[str, str | None]]]]:
    """Records of ``git log -z --raw``: a header token starting with \\x1e, then per changed file
    a ``:old-mode new-mode old-blob new-blob status`` token and a path token. The blob is None
    where the path stops being a regular file."""
    tokens = iter(output.split(b"\0"))
    commit, changed = None, []
    for token in tokens:
        if token.startswith(b"\x1e"):
            if commit is not None:
                yield commit, changed
            commit, changed = _fleet_commit(token[1:].decode("utf-8", "replace")), []
        elif token.lstrip(b"\n").startswith(b":"):
            _, new_mode, _, blob, status = token.lstrip(b"\n")[1:].decode("ascii").split()
            path = next(tokens).decode("utf-8", "surrogateescape")
            changed.append((path, None if status == "D" or new_mode not in _REGULAR_FILE_MODES else blob))
    if commit is not None:
        yield commit, changed


def _fleet_commit(header: str) -> FleetCommit:
    sha, author, authored, committer, committed, message = header.split("\x1f", 5)
    return FleetCommit(sha, author, datetime.fromisoformat(authored), committer, datetime.fromisoformat(committed),
                       message.strip("\n"))


def _read_blob(source: GitSource, blob: str) -> bytes:
    return source.repo.git.get_object_data(blob)[3]


def fleet_commit_at(source: GitSource, head: str, at: datetime) -> str | None:
    """The branch's commit at ``at``: the newest first-parent commit committed by then."""
    listing = source.repo.git.log(*_PLAIN_LOG, "--first-parent", "--format=%H %ct", head, env=_ISOLATED_GIT)
    for line in listing.splitlines():
        sha, committed = line.split()
        if int(committed) <= at.timestamp():
            return sha
    return None


# --- what the sites say -------------------------------------------------------------------------

@dataclass(frozen=True)
class StatusCommit:
    sha: str
    time: int  # commit date: StatusRefs writes the record's writtenAt there


History = list[tuple[str, StatusRecord]]  # (status commit, record), oldest first, as StatusRefs.history gives


class StatusArchive:
    """Every site's status records, read in bulk. ``latest`` is each site's newest record."""

    FIRST_WINDOW = 3600  # seconds before a moment asked about that the first walk reaches back

    def __init__(self, source: GitSource, sites: Collection[str] | None = None, fetch: bool = True):
        """``fetch``: bring every status ref from the source's remote first (one fetch); without
        it, the refs the source's repository holds are read."""
        self._source = source
        fetched = StatusRefs(source).read_all() if fetch else None
        refs = source.repo.git.for_each_ref("--format=%(refname) %(objectname)", STATUS_REF_PREFIX).splitlines()
        tips = {ref.removeprefix(STATUS_REF_PREFIX): sha for ref, sha in (line.split() for line in refs)}
        if fetched is None:  # as read_all reads them: each ref's newest record, if it parses
            records = self._records({sha: site for site, sha in tips.items()})
            fetched = {site: records[sha] for site, sha in tips.items() if sha in records}
        self.latest = fetched
        self._tips = {site: sha for site, sha in tips.items() if sites is None or site in sites}

    @property
    def sites(self) -> list[str]:
        return sorted(self._tips)

    def histories(self, sites: Iterable[str] | None = None) -> dict[str, History]:
        """Every record of each site (default: every site read)."""
        tips = {site: self._tips[site] for site in (self._tips if sites is None else sites)}
        parent_of = self._log(tips.values())
        chains = {site: _chain(tip, parent_of)[0] for site, tip in tips.items()}
        records = self._records({c.sha: site for site, chain in chains.items() for c in chain})
        return {site: [(c.sha, records[c.sha]) for c in reversed(chain) if c.sha in records]
                for site, chain in chains.items()}

    def histories_as_of(self, at: datetime) -> dict[str, History]:
        """Enough of every site's history to find its record in force at ``at`` with serving_at.
        Commit dates point at the newest record dated by then; that record and the one after it
        must bear their commits' dates out, else the site's whole history is read."""
        cutoff = at.timestamp()
        pairs: dict[str, tuple[StatusCommit | None, StatusCommit | None]] = {}
        for site, chain in self._chains_reaching(cutoff).items():  # newest first
            index = next((i for i, c in enumerate(chain) if c.time <= cutoff), len(chain))
            pairs[site] = (chain[index] if index < len(chain) else None, chain[index - 1] if index else None)
        records = self._records({c.sha: site for site, pair in pairs.items() for c in pair if c is not None})
        found: dict[str, History] = {}
        unsure = []
        for site, (candidate, newer) in pairs.items():
            dated_right = all(c is None or (c.sha in records and _seconds(records[c.sha]) == c.time)
                              for c in (candidate, newer))
            # Within the second of ``at`` the candidate may still be after it: then read on.
            if dated_right and (candidate is None or _utc(records[candidate.sha].writtenAt) <= at):
                found[site] = [(candidate.sha, records[candidate.sha])] if candidate else []
            else:
                unsure.append(site)
        return found | self.histories(unsure)

    def _chains_reaching(self, cutoff: float) -> dict[str, list[StatusCommit]]:
        """Per site, its newest commits down to the first one dated at or before ``cutoff`` (or
        down to its first). ``git log --since`` stops each walk early; sites that wrote nothing in
        the window are walked on from where they stopped, over a window four times as long."""
        chains: dict[str, list[StatusCommit]] = {site: [] for site in self._tips}
        pending = dict(self._tips)  # site -> the commit its walk goes on from
        window = self.FIRST_WINDOW
        while pending:
            since: int | None = int(cutoff) - window
            if since is not None and since <= 0:
                since = None
            parent_of = self._log(pending.values(), since)
            for site, start in list(pending.items()):
                walked, stopped_at = _chain(start, parent_of, cutoff)
                chains[site] += walked
                if stopped_at is None or since is None:  # done, or its history goes no further here
                    del pending[site]
                else:
                    pending[site] = stopped_at
            window *= 4
        return chains

    def _log(self, starts: Iterable[str], since: int | None = None) -> dict[str, tuple[int, str | None]]:
        """Commit date and first parent of every commit reachable from ``starts`` (dated at or
        after ``since``), from one ``git log``."""
        starts = list(starts)
        if not starts:
            return {}
        limit = [f"--since=@{since}"] if since is not None else []
        listing = self._source.repo.git.log(*_PLAIN_LOG, "--format=%H %ct %P", *limit, *starts, env=_ISOLATED_GIT)
        parent_of: dict[str, tuple[int, str | None]] = {}
        for line in listing.splitlines():
            sha, time, *parents = line.split()
            parent_of[sha] = (int(time), parents[0] if parents else None)
        return parent_of

    def _records(self, site_of: Mapping[str, str]) -> dict[str, StatusRecord]:
        """The records of these status commits (mapped to their sites), through one cat-file."""
        shas = list(site_of)
        if not shas:
            return {}
        request = "".join(f"{sha}:{STATUS_FILE}\n" for sha in shas).encode()
        done = subprocess.run(["git", "cat-file", "--batch"], input=request, capture_output=True, check=True,
                              cwd=self._source.repo.git_dir, env={**os.environ, **_ISOLATED_GIT})
        records = {}
        for sha, data in zip(shas, _batch_contents(done.stdout), strict=True):
            record = parse_record(data, sha, site_of[sha])
            if record is not None:
                records[sha] = record
        return records


def _chain(start: str, parent_of: Mapping[str, tuple[int, str | None]],
           cutoff: float | None = None) -> tuple[list[StatusCommit], str | None]:
    """The first-parent commits from ``start`` that ``parent_of`` knows, newest first, ending at
    the first one dated by ``cutoff``; and the commit where the walk would go on (None: done)."""
    chain: list[StatusCommit] = []
    sha: str | None = start
    while sha is not None and sha in parent_of:
        time, parent = parent_of[sha]
        chain.append(StatusCommit(sha, time))
        if cutoff is not None and time <= cutoff:
            return chain, None
        sha = parent
    return chain, sha


def _batch_contents(output: bytes) -> Iterator[bytes | None]:
    """The objects of ``git cat-file --batch`` output, in order; None for a missing one."""
    position = 0
    while position < len(output):
        end = output.index(b"\n", position)
        header = output[position:end].split()
        if len(header) != 3:  # "<name> missing"
            yield None
            position = end + 1
            continue
        size = int(header[2])
        yield output[end + 1:end + 1 + size]
        position = end + 1 + size + 1


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seconds(record: StatusRecord) -> int:
    return int(_utc(record.writtenAt).timestamp())


def utc_text(moment: datetime) -> str:
    return _utc(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


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
        written = _utc(record.writtenAt)
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


def serving_at(history: Sequence[tuple[str, StatusRecord]], at: datetime) -> tuple[str, StatusRecord] | None:
    """PURE: the record in force at ``at``: the newest one written at or before it."""
    return next(((c, r) for c, r in reversed(history) if _utc(r.writtenAt) <= at), None)


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
                "writtenAt": _utc(record.writtenAt).isoformat() if record else None,
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

    def to_json(self) -> dict[str, Any]:
        return {"kind": "AuditTrail", "repo": self.repo, "branch": self.branch, "head": self.head,
                "changes": [change.to_json() for change in self.changes],
                "timelines": [interval.to_json() for interval in self.intervals],
                "invalidCommits": [bad.to_json() for bad in self.invalid]}


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
        archive = fleet.status({site} if site else None)
        sites = [*(trail.latest.sites if trail.latest else ()), *archive.sites]
        _require_known(site, sites, deployment, [c.deployment for c in trail.changes], archive)
        histories = archive.histories()
    intervals = [interval for name, history in sorted(histories.items()) for interval in site_timeline(name, history)
                 if deployment in (None, interval.deployment)]
    changes = [change for change in trail.changes if deployment in (None, change.deployment)]
    return AuditTrail(shown_location(location), branch, fleet.head, changes, trail.invalid, intervals)


def audit_at(location: str, branch: str, at: datetime, site: str | None = None,
             deployment: str | None = None) -> FleetAt:
    """What every site (or ``site``) served at ``at``, and what the branch asked for then. The
    inventory is the branch's Sites at that moment, plus every site with a status ref."""
    only = {deployment} if deployment else None
    at = _utc(at)
    with open_fleet(location, branch) as opened:
        fleet_commit = fleet_commit_at(opened.source, opened.head, at)
        fleet = load_tree(opened.source.files(fleet_commit)).repo if fleet_commit else None
        archive = opened.status({site} if site else None)
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

    def status(self, sites: Collection[str] | None = None) -> StatusArchive:
        return StatusArchive(self.source, sites, fetch=not self.in_place)


@contextmanager
def open_fleet(location: str, branch: str) -> Iterator[OpenFleet]:
    """The fleet repo at ``location`` and its branch's head. A local repository is read in place,
    and only read: nothing is fetched into it or written there. A URL is fetched into a
    throwaway cache."""
    local = Path(location)
    with tempfile.TemporaryDirectory(prefix="reconciler-audit-") as scratch:
        cache = Path(_git_output(local, "rev-parse", "--path-format=absolute", "--git-common-dir").strip()) \
            if local.is_dir() else Path(scratch)
        with GitSource(str(local.resolve()) if local.is_dir() else location, branch, cache) as source:
            try:
                head = _local_head(source, branch) if local.is_dir() else source.fetch()
            except ReconcilerError as error:
                raise UsageError(f"cannot read {location}: {error}") from error
            yield OpenFleet(source, head, in_place=local.is_dir())


def _local_head(source: GitSource, branch: str) -> str:
    try:
        return source.repo.git.rev_parse("--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")
    except GitCommandError:
        raise Stalled("BranchNotFound", f"{source.url} has no branch {branch!r}") from None


def _git_output(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env={**os.environ, **_ISOLATED_GIT})
    if done.returncode != 0:
        raise UsageError(f"{repo} is not a git repository: {done.stderr.strip()}")
    return done.stdout


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
    return _utc(moment)
