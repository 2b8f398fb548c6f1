"""History from Git alone, for auditors: who changed which deployment and when (and whether a
trusted signer signed that commit), which version every site served over time, and what the whole
fleet served at any moment. reconciler.history.report shows it (text, JSON, CSV), reconciler.history.html_report as an HTML page. This module
reads the fleet branch; reconciler.history.archive reads the status refs and
reconciler.history.timeline answers from both (its docstring documents the JSON).

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
unsigned, unknown-key (valid, by a signer not trusted), expired, revoked, cannot-check."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from reconciler.delivery.plan import rollout_of
from reconciler.gitdoor.git import REGULAR_FILE_MODES
from reconciler.gitdoor.source import GitSource
from reconciler.manifests.deployments import FlagRef
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.loader import DocumentCache, LoadResult, load_tree
from reconciler.settings import CommitPolicy
from reconciler.trust.commitpolicy import signature_verdicts

log = logging.getLogger(__name__)

ASPECTS = ("model", "version", "enabled", "targets", "rollout", "canary", "artifacts", "interface")
SIGNATURE_WORDS = {"N": "unsigned", "B": "bad", "U": "unknown-key", "G": "unknown-key", "X": "expired",
                   "Y": "expired", "R": "revoked", "E": "cannot-check"}

_MANIFEST_PATHSPECS = ("*.yaml", "*.yml", "*.flagd.json")  # git pathspecs: '*' crosses directories
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
    output = source.git.log_bytes("--first-parent", "--reverse", "--root", "--raw", "-z", "--no-renames", "--no-abbrev",
                                  f"--format={_LOG_FORMAT}", head, "--", *_MANIFEST_PATHSPECS)
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
        files = [source.repo_file(path, blob) for path, blob in tree.items()]
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
            changed.append((path, None if status == "D" or new_mode not in REGULAR_FILE_MODES else blob))
    if commit is not None:
        yield commit, changed


def _fleet_commit(header: str) -> FleetCommit:
    sha, author, authored, committer, committed, message = header.split("\x1f", 5)
    return FleetCommit(sha, author, datetime.fromisoformat(authored), committer, datetime.fromisoformat(committed),
                       message.strip("\n"))


def fleet_commit_at(source: GitSource, head: str, at: datetime) -> str | None:
    """The branch's commit at ``at``: the newest first-parent commit committed by then."""
    listing = source.git.log("--first-parent", "--format=%H %ct", head)
    for line in listing.splitlines():
        sha, committed = line.split()
        if int(committed) <= at.timestamp():
            return sha
    return None


def as_utc(moment: datetime) -> datetime:
    """``moment``, read as UTC when it carries no offset."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def utc_text(moment: datetime) -> str:
    return as_utc(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
