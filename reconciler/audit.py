"""History from Git alone, for auditors: who changed which deployment and when (and whether a
trusted signer signed that commit), which version every site served over time, and what the whole
fleet served at any moment (``--at``).

Two sources, both in the fleet repository:
- the fleet branch, walked with ``git log --first-parent`` over the manifest files; each commit's
  documents are loaded with a DocumentCache, so only the files a commit changed are parsed;
- the status refs ``refs/reconciler/status/<site>``, read in bulk: one fetch, one ``git log`` over
  every status ref, one ``git cat-file --batch`` for the records needed.

A deployment change is a first-parent commit after which a Deployment reads differently in one of
these aspects: ``model``, ``version``, ``enabled``, ``targets``, ``rollout`` (its own, or the Fleet's
defaultRollout it falls back on), ``canary``, ``artifacts`` (the served version's entry in its Model,
artifacts and validation cases, changed under the same version; every version's when a flag picks
it), ``interface`` (of its Model); or
``created`` / ``deleted``. A Model change that leaves those alone (a new version added, a new
description) changes nothing a site runs and is not listed. Commits whose manifests do not load are
listed apart (``invalidCommits``): sites refuse them, so they change nothing either. A merge counts
as one commit, against its first parent. Signature states are git's ``%G?`` checked against the
trust roots given (``--allowed-signers``, ``--gpg-keyring``) in isolation from the machine's git and
gpg config, as the agent's commit policy does: good, bad (the commit is not what was signed),
unsigned, unknown-key (valid, but by a signer not given), expired, revoked, cannot-check.

A timeline interval is a stretch of a site's records in which one deployment kept its served
version (``activeVersion``), desired version and state; it runs [from, to), ``to`` null while it
lasts. The record in force at TIME is the newest record (in ref order) whose ``writtenAt`` is at or
before TIME; a site with none is ``unknown``. StatusRefs dates each status commit with its record's
``writtenAt``; ``--at`` uses those dates to read one record per site and checks ``writtenAt`` itself,
reading a site's whole ref only where the two disagree.

JSON (``--format json``), stable; times are ISO 8601 with offset; a version a flag picks reads
``flag:KEY``:
  audit:       {"kind": "AuditTrail", "repo", "branch", "head", "changes": [Change],
                "timelines": [Interval], "invalidCommits": [{"commit", "committerDate", "author",
                "subject", "errors", "firstError"}]}
  Change:      {"deployment", "commit", "author", "authorDate", "committer", "committerDate",
                "subject", "message", "signature": {"state", "signer", "key"}, "model",
                "versionFrom", "versionTo", "changed": [aspect]}
  Interval:    {"site", "deployment", "from", "to", "version", "desiredVersion", "state", "wave",
                "observedCommit", "statusCommit"}
  audit --at:  {"kind": "FleetAt", "at", "repo", "branch", "fleetCommit", "desired": {deployment:
                version}, "sites": [{"site", "state" ("unknown": no record by then), "writtenAt",
                "statusCommit", "observedCommit", "deployments": {name: {"version",
                "desiredVersion", "state", "wave"}}}]}
CSV (``--format csv``): audit gives one row per change (kind ``change``) and per interval (kind
``interval``) under one header, CSV_COLUMNS; ``audit --at`` one row per site and deployment
(AT_COLUMNS; a site with no record has one row, state ``unknown``).

Exit status: 0; 1 when a listed change has a bad signature (the commit was altered after it was
signed); 2 for bad usage or a repository that cannot be read."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reconciler.commitpolicy import CommitPolicy, signature_verdicts
from reconciler.errors import ReconcilerError, UsageError
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.loader import DocumentCache, LoadResult, RepoFile, load_tree
from reconciler.manifests.models import FlagRef
from reconciler.plan import rollout_of
from reconciler.source import GitSource
from reconciler.status.gitref import STATUS_FILE, STATUS_REF_PREFIX, StatusRefs
from reconciler.status.record import StatusRecord

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FINDING, EXIT_USAGE = 0, 1, 2
ASPECTS = ("model", "version", "enabled", "targets", "rollout", "canary", "artifacts", "interface")
SIGNATURE_WORDS = {"N": "unsigned", "B": "bad", "U": "unknown-key", "G": "unknown-key", "X": "expired",
                   "Y": "expired", "R": "revoked", "E": "cannot-check"}
UNKNOWN = "unknown"
CSV_COLUMNS = ("kind", "time", "end", "site", "deployment", "version_from", "version", "desired_version", "state",
               "wave", "commit", "observed_commit", "author", "committer", "signature", "changed", "subject")
AT_COLUMNS = ("site", "deployment", "version", "desired_version", "state", "wave", "written_at", "status_commit",
              "observed_commit")

_MANIFEST_PATHSPECS = ("*.yaml", "*.yml", "*.flagd.json")  # git pathspecs: '*' crosses directories
_REGULAR_FILE_MODES = ("100644", "100755")  # symlinks and submodules are not fleet files
# Output must not depend on the reader's git config (log.showSignature, diff.renames, ...).
_ISOLATED_GIT = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
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
    state: str  # one of "good" and SIGNATURE_WORDS' values
    signer: str  # SSH principal or OpenPGP user id, when the key is a trusted one
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


@dataclass(frozen=True)
class InvalidCommit:
    commit: FleetCommit
    errors: int
    first_error: str


@dataclass(frozen=True)
class FleetTrail:
    changes: list[DeploymentChange]
    invalid: list[InvalidCommit]
    latest: FleetRepo | None  # the newest commit that loaded


def version_text(version: str | FlagRef) -> str:
    return version if isinstance(version, str) else f"flag:{version.flag}"


def deployment_aspects(repo: FleetRepo) -> dict[str, dict[str, Any]]:
    """PURE: per deployment, the value of every aspect a site acts on (see ASPECTS)."""
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


def fleet_trail(source: GitSource, head: str, policy: CommitPolicy | None = None) -> FleetTrail:
    """Every deployment change on the first-parent history of ``head``, oldest first, signatures
    judged against ``policy``'s trust roots (none: no signer is trusted)."""
    before: dict[str, dict[str, Any]] = {}
    changes: list[DeploymentChange] = []
    invalid: list[InvalidCommit] = []
    latest = None
    for commit, loaded in fleet_history(source, head):
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
        signed.append(replace(change, signature=Signature(state, verdict.signer if verdict.allowed else "",
                                                          verdict.key)))
    return FleetTrail(signed, invalid, latest)


def fleet_history(source: GitSource, head: str) -> Iterator[tuple[FleetCommit, LoadResult]]:
    """The first-parent commits of ``head`` that touched a manifest file, oldest first, each with
    its documents. One ``git log --raw`` tells which blobs each commit changed; the tree is kept
    up to date from it, so no commit costs a process of its own."""
    output = source.repo.git.log("--first-parent", "--reverse", "--root", "--raw", "-z", "--no-renames",
                                 "--no-abbrev", f"--format={_LOG_FORMAT}", head, "--", *_MANIFEST_PATHSPECS,
                                 env=_ISOLATED_GIT, stdout_as_string=False)
    tree: dict[str, str] = {}  # path -> blob
    cache = DocumentCache()
    for commit, changed in _parse_raw_log(output):
        for path, blob in changed:
            if blob is None:
                tree.pop(path, None)
            else:
                tree[path] = blob
        files = [RepoFile(path, blob, partial(_read_blob, source, blob)) for path, blob in tree.items()]
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
    listing = source.repo.git.log("--first-parent", "--format=%H %ct", head, env=_ISOLATED_GIT)
    for line in listing.splitlines():
        sha, committed = line.split()
        if int(committed) <= at.timestamp():
            return sha
    return None


def load_commit(source: GitSource, sha: str) -> FleetRepo:
    return load_tree(source.files(sha)).repo


# --- what the sites say -------------------------------------------------------------------------

@dataclass(frozen=True)
class StatusCommit:
    sha: str
    time: int  # commit date: StatusRefs writes the record's writtenAt there


History = list[tuple[str, StatusRecord]]  # (status commit, record), oldest first, as StatusRefs.history


class StatusArchive:
    """Every site's status records, read in bulk. ``latest`` is each site's newest record."""

    def __init__(self, source: GitSource, sites: Collection[str] | None = None):
        self._source = source
        self.latest = StatusRefs(source).read_all()  # also fetches every status ref
        self._chains = self._read_chains(sites)

    @property
    def sites(self) -> list[str]:
        return sorted(self._chains)

    def histories(self, sites: Iterable[str] | None = None) -> dict[str, History]:
        """Every record of each site (default: every site read)."""
        chains = {site: self._chains[site] for site in (self._chains if sites is None else sites)}
        records = self._records({c.sha: site for site, chain in chains.items() for c in chain})
        return {site: [(c.sha, records[c.sha]) for c in reversed(chain) if c.sha in records]
                for site, chain in chains.items()}

    def histories_as_of(self, at: datetime) -> dict[str, History]:
        """Enough of every site's history to find its record in force at ``at`` (serving_at):
        the newest record dated by then, or the whole history where dates and records disagree."""
        cutoff = at.timestamp()
        candidates = {site: next((c for c in chain if c.time <= cutoff), None) for site, chain in self._chains.items()}
        records = self._records({c.sha: site for site, c in candidates.items() if c is not None})
        found: dict[str, History] = {}
        unsure = []
        for site, commit in candidates.items():
            record = records.get(commit.sha) if commit else None
            if commit is None:
                found[site] = []
            elif record is not None and _utc(record.writtenAt) <= at and _seconds(record) == commit.time:
                found[site] = [(commit.sha, record)]
            else:
                unsure.append(site)
        return found | self.histories(unsure)

    def _read_chains(self, sites: Collection[str] | None) -> dict[str, list[StatusCommit]]:
        """Per site, its ref's first-parent commits, newest first, from one ``git log``."""
        repo = self._source.repo
        refs = repo.git.for_each_ref("--format=%(refname) %(objectname)", STATUS_REF_PREFIX).splitlines()
        tips = {ref.removeprefix(STATUS_REF_PREFIX): sha for ref, sha in (line.split() for line in refs)}
        if sites is not None:
            tips = {site: sha for site, sha in tips.items() if site in sites}
        if not tips:
            return {}
        listing = repo.git.log("--format=%H %ct %P", *tips.values(), env=_ISOLATED_GIT)
        parent_of: dict[str, tuple[int, str | None]] = {}
        for line in listing.splitlines():
            sha, time, *parents = line.split()
            parent_of[sha] = (int(time), parents[0] if parents else None)
        chains = {}
        for site, tip in tips.items():
            chain, sha = [], tip
            while sha is not None:
                time, parent = parent_of[sha]
                chain.append(StatusCommit(sha, time))
                sha = parent
            chains[site] = chain
        return chains

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
            record = _parse_record(data, sha, site_of[sha])
            if record is not None:
                records[sha] = record
        return records


def _batch_contents(output: bytes) -> Iterator[bytes | None]:
    """The objects of ``git cat-file --batch`` output, in order; None for a missing one."""
    position = 0
    while position < len(output):
        end = output.index(b"\n", position)
        header = output[position:end].split()
        if header[-1] == b"missing" or len(header) != 3:
            yield None
            position = end + 1
            continue
        size = int(header[2])
        yield output[end + 1:end + 1 + size]
        position = end + 1 + size + 1


def _parse_record(data: bytes | None, commit: str, site: str) -> StatusRecord | None:
    """As StatusRefs reads a record: one that does not parse, or names another site, is skipped
    with a warning so that one broken site does not hide the rest."""
    if data is None:
        log.warning("skipping status commit %s of site %s: it has no %s", commit, site, STATUS_FILE)
        return None
    try:
        record = StatusRecord.model_validate_json(data)
    except ValidationError as error:
        log.warning("skipping status record %s of site %s: %s", commit, site, error)
        return None
    if record.site != site:
        log.warning("skipping status record %s: it is on %s's ref but names site %s", commit, site, record.site)
        return None
    return record


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seconds(record: StatusRecord) -> int:
    return int(_utc(record.writtenAt).timestamp())


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


def site_timeline(site: str, history: Sequence[tuple[str, StatusRecord]]) -> list[Interval]:
    """PURE: the site's intervals per deployment, in order of their start."""
    open_: dict[str, Interval] = {}
    closed: list[Interval] = []
    for commit, record in history:
        written = _utc(record.writtenAt)
        for name in list(open_):
            status = record.deployments.get(name)
            current = open_[name]
            if status is None or (status.activeVersion, status.version, status.state) != \
                    (current.version, current.desired, current.state):
                closed.append(replace(current, end=written))
                del open_[name]
        for name, status in record.deployments.items():
            if name not in open_:
                open_[name] = Interval(site, name, written, None, status.activeVersion, status.version, status.state,
                                       status.wave, record.observedCommit, commit)
    return sorted([*closed, *open_.values()], key=lambda i: (i.start, i.deployment))


def serving_at(history: Sequence[tuple[str, StatusRecord]], at: datetime) -> tuple[str, StatusRecord] | None:
    """PURE: the record in force at ``at``: the newest one written at or before it."""
    return next(((c, r) for c, r in reversed(history) if _utc(r.writtenAt) <= at), None)


@dataclass(frozen=True)
class SiteAt:
    site: str
    status_commit: str | None
    record: StatusRecord | None  # None: the site had written no record by then

    @property
    def state(self) -> str:
        return self.record.state if self.record else UNKNOWN


def fleet_at(histories: Mapping[str, Sequence[tuple[str, StatusRecord]]], inventory: Iterable[str],
             at: datetime) -> list[SiteAt]:
    """PURE: every site of the inventory or with a history, and its record in force at ``at``."""
    rows = []
    for site in sorted(set(inventory) | set(histories)):
        found = serving_at(histories.get(site, ()), at)
        rows.append(SiteAt(site, found[0], found[1]) if found else SiteAt(site, None, None))
    return rows


# --- reading a repository -----------------------------------------------------------------------

@contextmanager
def open_fleet(location: str, branch: str) -> Iterator[tuple[GitSource, str]]:
    """A throwaway cache of the fleet repo and its branch's head. A local repository lends its
    objects to the cache (git alternates), so reading it copies nothing and writes nothing there."""
    with tempfile.TemporaryDirectory(prefix="reconciler-audit-") as cache, \
            GitSource(location, branch, Path(cache)) as source:
        if Path(location).is_dir():
            objects = _objects_dir(Path(location))
            (Path(source.repo.git_dir) / "objects" / "info" / "alternates").write_text(f"{objects}\n")
        try:
            head = source.fetch()
        except ReconcilerError as error:
            raise UsageError(f"cannot read {location}: {error}") from error
        yield source, head


def _objects_dir(local: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=local,
                          capture_output=True, text=True, env={**os.environ, **_ISOLATED_GIT})
    if done.returncode != 0:
        raise UsageError(f"{local} is not a git repository: {done.stderr.strip()}")
    return str(Path(done.stdout.strip()) / "objects")


def parse_time(text: str) -> datetime:
    """ISO 8601 (``2024-05-01T12:00:00Z``, ``2024-05-01T14:00+02:00``) or ``YYYY-MM-DD HH:MM``;
    without an offset, UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--at {text!r}: not a time (want ISO 8601 or 'YYYY-MM-DD HH:MM', UTC unless an "
                         "offset is given)") from None
    return _utc(moment)


# --- output -------------------------------------------------------------------------------------

def trail_to_json(trail: FleetTrail, intervals: list[Interval], repo: str, branch: str, head: str) -> dict[str, Any]:
    return {
        "kind": "AuditTrail", "repo": repo, "branch": branch, "head": head,
        "changes": [_change_json(change) for change in trail.changes],
        "timelines": [_interval_json(interval) for interval in intervals],
        "invalidCommits": [{"commit": bad.commit.sha, "committerDate": bad.commit.committer_date.isoformat(),
                            "author": bad.commit.author, "subject": bad.commit.subject, "errors": bad.errors,
                            "firstError": bad.first_error} for bad in trail.invalid],
    }


def _change_json(change: DeploymentChange) -> dict[str, Any]:
    commit, signature = change.commit, change.signature
    return {
        "deployment": change.deployment, "commit": commit.sha, "author": commit.author,
        "authorDate": commit.author_date.isoformat(), "committer": commit.committer,
        "committerDate": commit.committer_date.isoformat(), "subject": commit.subject, "message": commit.message,
        "signature": {"state": signature.state, "signer": signature.signer, "key": signature.key} if signature
        else None,
        "model": change.model, "versionFrom": change.version_from, "versionTo": change.version_to,
        "changed": list(change.changed),
    }


def _interval_json(interval: Interval) -> dict[str, Any]:
    return {"site": interval.site, "deployment": interval.deployment, "from": interval.start.isoformat(),
            "to": interval.end.isoformat() if interval.end else None, "version": interval.version,
            "desiredVersion": interval.desired, "state": interval.state, "wave": interval.wave,
            "observedCommit": interval.observed_commit, "statusCommit": interval.status_commit}


def at_to_json(rows: list[SiteAt], at: datetime, fleet_commit: str | None, desired: Mapping[str, str],
               deployments: Collection[str] | None, repo: str, branch: str) -> dict[str, Any]:
    return {
        "kind": "FleetAt", "at": at.isoformat(), "repo": repo, "branch": branch, "fleetCommit": fleet_commit,
        "desired": dict(desired),
        "sites": [{"site": row.site, "state": row.state,
                   "writtenAt": _utc(row.record.writtenAt).isoformat() if row.record else None,
                   "statusCommit": row.status_commit,
                   "observedCommit": row.record.observedCommit if row.record else None,
                   "deployments": {name: {"version": status.activeVersion, "desiredVersion": status.version,
                                          "state": status.state, "wave": status.wave}
                                   for name, status in sorted(_cells(row, deployments).items())}}
                  for row in rows],
    }


def _cells(row: SiteAt, deployments: Collection[str] | None) -> dict[str, Any]:
    cells = row.record.deployments if row.record else {}
    return {name: status for name, status in cells.items() if deployments is None or name in deployments}


def trail_to_csv(trail: FleetTrail, intervals: list[Interval]) -> str:
    rows = [{"kind": "change", "time": c.commit.committer_date.isoformat(), "deployment": c.deployment,
             "version_from": c.version_from, "version": c.version_to, "commit": c.commit.sha,
             "author": c.commit.author, "committer": c.commit.committer,
             "signature": c.signature.state if c.signature else "", "changed": ";".join(c.changed),
             "subject": c.commit.subject} for c in trail.changes]
    rows += [{"kind": "interval", "time": i.start.isoformat(), "end": i.end.isoformat() if i.end else "",
              "site": i.site, "deployment": i.deployment, "version": i.version, "desired_version": i.desired,
              "state": i.state, "wave": i.wave, "commit": i.status_commit, "observed_commit": i.observed_commit}
             for i in intervals]
    return _csv(CSV_COLUMNS, rows)


def at_to_csv(rows: list[SiteAt], deployments: Collection[str] | None) -> str:
    out = []
    for row in rows:
        common = {"site": row.site, "status_commit": row.status_commit,
                  "written_at": _utc(row.record.writtenAt).isoformat() if row.record else "",
                  "observed_commit": row.record.observedCommit if row.record else ""}
        cells = _cells(row, deployments)
        if not cells:
            out.append({**common, "state": row.state})
        out += [{**common, "deployment": name, "version": status.activeVersion, "desired_version": status.version,
                 "state": status.state, "wave": status.wave} for name, status in sorted(cells.items())]
    return _csv(AT_COLUMNS, out)


def _csv(columns: Sequence[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def trail_to_text(trail: FleetTrail, intervals: list[Interval], branch: str, head: str) -> str:
    lines = [f"Deployment changes on {branch} (head {head[:12]}): {len(trail.changes)}"]
    lines += _table(["COMMITTED", "COMMIT", "DEPLOYMENT", "CHANGE", "AUTHOR", "SIGNATURE", "SUBJECT"],
                    [[_minute(c.commit.committer_date), c.commit.sha[:12], c.deployment, _change_words(c),
                      c.commit.author, _signature_words(c.signature), c.commit.subject] for c in trail.changes])
    if trail.invalid:
        lines += ["", f"Commits whose manifests did not load (sites refused them): {len(trail.invalid)}"]
        lines += _table(["COMMITTED", "COMMIT", "AUTHOR", "ERRORS", "FIRST ERROR"],
                        [[_minute(b.commit.committer_date), b.commit.sha[:12], b.commit.author, str(b.errors),
                          b.first_error] for b in trail.invalid])
    lines += ["", f"Site timelines: {len(intervals)} intervals"]
    lines += _table(["SITE", "DEPLOYMENT", "FROM", "TO", "SERVED", "DESIRED", "STATE", "WAVE", "OBSERVED"],
                    [[i.site, i.deployment, _minute(i.start), _minute(i.end) if i.end else "now", i.version or "-",
                      i.desired or "-", i.state, i.wave or "-", (i.observed_commit or "-")[:12]] for i in intervals])
    return "\n".join(lines)


def at_to_text(rows: list[SiteAt], at: datetime, fleet_commit: str | None, desired: Mapping[str, str],
               deployments: Collection[str] | None) -> str:
    asked = ", ".join(f"{name} {version}" for name, version in sorted(desired.items())) or "nothing"
    commit = f"at {fleet_commit[:12]}" if fleet_commit else "not yet created"
    names = sorted({name for row in rows for name in _cells(row, deployments)} | set(desired))
    lines = [f"Fleet at {at.isoformat()}: the branch was {commit}, asking {asked}"]
    lines += _table(["SITE", "STATE", "RECORD WRITTEN", *names],
                    [[row.site, row.state, _minute(row.record.writtenAt) if row.record else "-",
                      *(_served(_cells(row, deployments).get(name)) for name in names)] for row in rows])
    return "\n".join(lines)


def _served(status: Any) -> str:
    if status is None:
        return "-"
    text = status.activeVersion or "none"
    if status.version and status.version != status.activeVersion:
        text += f" (wants {status.version})"
    return text if status.state == "success" else f"{text} {status.state}"


def _change_words(change: DeploymentChange) -> str:
    if change.changed == ("created",):
        return f"created at {change.version_to}"
    if change.changed == ("deleted",):
        return f"deleted (was {change.version_from})"
    return ", ".join(f"version {change.version_from} -> {change.version_to}" if aspect == "version" else aspect
                     for aspect in change.changed)


def _signature_words(signature: Signature | None) -> str:
    if signature is None:
        return "-"
    return f"{signature.state} ({signature.signer})" if signature.signer else signature.state


def _minute(moment: datetime) -> str:
    return _utc(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    table = [header, *rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return ["  " + "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
            for line in table]


# --- command line -------------------------------------------------------------------------------

def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """``reconciler audit`` and ``reconciler report``."""
    audit = subparsers.add_parser("audit", help="history from Git: deployment changes, site timelines, --at TIME")
    _repo_arguments(audit)
    audit.add_argument("--site", help="only this site's timeline (and row, with --at)")
    audit.add_argument("--deployment", help="only this deployment")
    audit.add_argument("--at", metavar="TIME", help="what every site served at TIME "
                       "(ISO 8601 or 'YYYY-MM-DD HH:MM'; UTC unless an offset is given)")
    audit.add_argument("--format", choices=["text", "json", "csv"], default="text")
    audit.set_defaults(handler=cmd_audit)

    report = subparsers.add_parser("report", help="a self-contained HTML report of the fleet and its history")
    report.add_argument("--html", required=True, type=Path, metavar="DIR", help="write DIR/index.html")
    _repo_arguments(report)
    report.set_defaults(handler=cmd_report)


def _repo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", default=".", help="fleet repo: a path or a URL (status refs live there)")
    parser.add_argument("--branch", default="main", help="the fleet branch (default main)")
    parser.add_argument("--allowed-signers", type=Path, help="SSH allowed-signers file: whose commit signatures "
                        "count as good")
    parser.add_argument("--gpg-keyring", type=Path, help="OpenPGP public keys whose commit signatures count as good")


def trust_policy(allowed_signers: Path | None, gpg_keyring: Path | None) -> CommitPolicy | None:
    if allowed_signers is None and gpg_keyring is None:
        return None
    return CommitPolicy(sshAllowedSigners=allowed_signers, gpgKeyring=gpg_keyring)


def cmd_audit(args: argparse.Namespace) -> int:
    at = parse_time(args.at) if args.at else None
    try:
        with open_fleet(args.repo, args.branch) as (source, head):
            return _audit_at(args, source, head, at) if at else _audit_trail(args, source, head)
    except ReconcilerError as error:  # an unreadable repository or trust root: the environment, not a finding
        raise UsageError(str(error)) from error


def _audit_trail(args: argparse.Namespace, source: GitSource, head: str) -> int:
    only = {args.deployment} if args.deployment else None
    trail = fleet_trail(source, head, trust_policy(args.allowed_signers, args.gpg_keyring))
    archive = StatusArchive(source, {args.site} if args.site else None)
    sites = [*(trail.latest.sites if trail.latest else ()), *archive.sites]
    _require_known(args, sites, [c.deployment for c in trail.changes], archive)
    intervals = [interval for site, history in archive.histories().items()
                 for interval in site_timeline(site, history) if only is None or interval.deployment in only]
    trail = replace(trail, changes=[c for c in trail.changes if only is None or c.deployment in only])
    if args.format == "json":
        _print(json.dumps(trail_to_json(trail, intervals, args.repo, args.branch, head), indent=2))
    elif args.format == "csv":
        _print(trail_to_csv(trail, intervals))
    else:
        _print(trail_to_text(trail, intervals, args.branch, head))
    return EXIT_FINDING if any(c.signature and c.signature.state == "bad" for c in trail.changes) else EXIT_OK


def _audit_at(args: argparse.Namespace, source: GitSource, head: str, at: datetime) -> int:
    only = {args.deployment} if args.deployment else None
    fleet_commit = fleet_commit_at(source, head, at)
    fleet = load_commit(source, fleet_commit) if fleet_commit else None
    archive = StatusArchive(source, {args.site} if args.site else None)
    inventory = list(fleet.sites) if fleet else []
    _require_known(args, [*inventory, *archive.sites], _desired(fleet, None), archive)
    rows = fleet_at(archive.histories_as_of(at), [s for s in inventory if args.site in (None, s)], at)
    desired = _desired(fleet, only)
    if args.format == "json":
        _print(json.dumps(at_to_json(rows, at, fleet_commit, desired, only, args.repo, args.branch), indent=2))
    elif args.format == "csv":
        _print(at_to_csv(rows, only))
    else:
        _print(at_to_text(rows, at, fleet_commit, desired, only))
    return EXIT_OK


def _desired(fleet: FleetRepo | None, deployments: Collection[str] | None) -> dict[str, str]:
    if fleet is None:
        return {}
    return {name: version_text(d.spec.version) for name, d in fleet.deployments.items()
            if deployments is None or name in deployments}


def _require_known(args: argparse.Namespace, sites: Iterable[str], deployments: Iterable[str],
                   archive: StatusArchive) -> None:
    if args.site and args.site not in set(sites):
        raise UsageError(f"--site {args.site}: no such site in the fleet and no status ref for it")
    reported = {name for record in archive.latest.values() for name in record.deployments}
    if args.deployment and args.deployment not in set(deployments) | reported:
        raise UsageError(f"--deployment {args.deployment}: no such deployment in the history or the status records")


def _print(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def cmd_report(args: argparse.Namespace) -> int:
    from reconciler.report import write_report

    try:
        path = write_report(args.html, args.repo, args.branch, trust_policy(args.allowed_signers, args.gpg_keyring),
                            datetime.now(UTC))
    except ReconcilerError as error:
        raise UsageError(str(error)) from error
    print(f"wrote {path}")
    return EXIT_OK
