"""Status records as commits on ``refs/reconciler/status/<site>`` in the fleet repository (or a
separate status repository: give it its own GitSource). Each commit's tree holds one file,
``status.json``, and ``status.json.sig`` when the site signs its records (status/signed.py);
``git log`` of a site's ref is that site's audit trail. Only the site writes its
ref, so pushes are plain fast-forwards and never conflict with other sites.

Records that do not parse are skipped with a logged warning: one broken site must not blind the
rest of the fleet's gates."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC

import git
from gitdb import IStream
from pydantic import ValidationError

from reconciler.errors import Transient
from reconciler.gitdoor.source import (
    GitSource,
    cache_failure,
    describe_git_failure,
    git_error_message,
    git_failure,
    git_words,
)
from reconciler.status.record import StatusRecord
from reconciler.status.signed import SIGNATURE_FILE, RecordCheck, RecordSigner

log = logging.getLogger(__name__)

STATUS_REF_PREFIX = "refs/reconciler/status/"
STATUS_FILE = "status.json"


def status_ref(site: str) -> str:
    return STATUS_REF_PREFIX + site


def parse_record(data: bytes | None, commit: str, site: str) -> StatusRecord | None:
    """A record read from a site's ref. One that is missing, does not parse, or names another site
    is skipped with a warning, so that one broken site does not hide the rest of the fleet."""
    if data is None:
        log.warning("skipping status commit %s of site %s: its %s is missing", commit, site, STATUS_FILE)
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


def record_json(record: StatusRecord) -> bytes:
    """The stored form: sorted keys and indented, so history diffs read line by line."""
    return (json.dumps(record.model_dump(mode="json"), sort_keys=True, indent=2) + "\n").encode()


class StatusRefs:
    def __init__(self, source: GitSource, signer: RecordSigner | None = None):
        self._source = source
        self._signer = signer

    def close(self) -> None:
        self._source.close()

    @property
    def _repo(self) -> git.Repo:
        return self._source.repo

    def read_own(self, site: str) -> StatusRecord | None:
        """The newest record on the site's ref, as the remote has it now."""
        self._fetch_own(site)
        tip = self._local_tip(site)
        return self._record_at(tip, site, self._own_check(site)) if tip else None

    def write(self, record: StatusRecord) -> str | None:
        """Publish ``record`` unless it says what the current one says. Returns the new commit,
        or None when nothing was written. The cached tip is trusted (only this site writes the
        ref); if the remote moved anyway, the record is re-parented on the remote tip once."""
        site = record.site
        if self._local_tip(site) is None:
            self._fetch_own(site)  # first write from this cache: learn what is there
        for attempt in range(2):
            tip = self._local_tip(site)
            if record.same_as(self._record_at(tip, site, self._own_check(site)) if tip else None):
                return None
            commit = self._commit(record, parent=tip)
            if self._push(commit, site):
                self._in_cache("update_ref", status_ref(site), commit)
                return commit
            if attempt == 0:
                self._fetch_own(site)
        raise Transient("StatusPushFailed", f"{status_ref(site)} on {self._source.url} keeps moving under this site")

    def read_all(self, check: RecordCheck | None = None) -> dict[str, StatusRecord]:
        """Every site's newest record: one fetch of all status refs, then reads through the
        source's one cat-file process, so thousands of sites cost one network round trip. With
        ``check``, only the records whose signatures it admits."""
        self._fetch(f"+{STATUS_REF_PREFIX}*:{STATUS_REF_PREFIX}*", "--prune")
        refs = self._in_cache("for_each_ref", "--format=%(refname) %(objectname)", STATUS_REF_PREFIX).splitlines()
        records = {}
        for ref, commit in (line.split() for line in refs):
            site = ref.removeprefix(STATUS_REF_PREFIX)
            if (record := self._record_at(commit, site, check)) is not None:
                records[site] = record
        return records

    def history(self, site: str) -> list[tuple[str, StatusRecord]]:
        """Every record the site published, oldest first, with its commit."""
        self._fetch_own(site)
        if self._local_tip(site) is None:
            return []
        commits = self._in_cache("log", "--first-parent", "--reverse", "--format=%H", status_ref(site)).split()
        entries = ((commit, self._record_at(commit, site)) for commit in commits)
        return [(commit, record) for commit, record in entries if record is not None]

    def _fetch_own(self, site: str) -> None:
        ref = status_ref(site)
        if not self._fetch(f"+{ref}:{ref}"):
            # The remote has no record (any more): forget ours so the next one starts afresh.
            if self._local_tip(site) is not None:
                self._in_cache("update_ref", "-d", ref)

    def _fetch(self, refspec: str, *options: str) -> bool:
        """False when the remote lacks a ref the refspec names exactly."""
        try:
            self._repo.git.fetch(
                "--quiet", "--no-tags", *options, "--", self._source.url, refspec,
                kill_after_timeout=self._source.timeout,
            )
        except git.GitCommandError as error:
            if "couldn't find remote ref" in git_error_message(error):
                return False
            raise git_failure(error, f"git fetch {self._source.url}", "StatusFetchFailed") from error
        return True

    def _in_cache(self, command: str, *args: str) -> str:
        """A git command on the local cache, its failure a typed error (say, a lock a killed git
        left, which the agent removes before it tries again)."""
        try:
            return getattr(self._repo.git, command)(*args)
        except git.GitCommandError as error:
            raise cache_failure(error, self._repo.git_dir) from error

    def _local_tip(self, site: str) -> str | None:
        try:  # read from the ref files, no process: write() asks on every reconcile that changed
            return git.SymbolicReference.dereference_recursive(self._repo, status_ref(site))
        except ValueError:
            return None

    def _own_check(self, site: str) -> RecordCheck | None:
        """A signing site takes as its own only what its keys signed: a record someone else put
        on its ref must not slip into the next record it signs."""
        return RecordCheck(self._signer.own_keys(site)) if self._signer else None

    def _record_at(self, rev: str, site: str, check: RecordCheck | None = None) -> StatusRecord | None:
        data = self._blob(rev, STATUS_FILE)
        if check is not None and not check.admit(site, rev, data, self._blob(rev, SIGNATURE_FILE)):
            return None
        return parse_record(data, rev, site)

    def _blob(self, rev: str, name: str) -> bytes | None:
        try:
            return self._repo.git.get_object_data(f"{rev}:{name}")[3]
        except ValueError:  # cat-file found no such file
            return None

    def _commit(self, record: StatusRecord, parent: str | None) -> str:
        stored = record_json(record)
        files = [(STATUS_FILE, stored)] + ([(SIGNATURE_FILE, self._signer.sign(stored))] if self._signer else [])
        tree = self._store(b"tree", b"".join(b"100644 " + name.encode() + b"\0" + self._store(b"blob", data)
                                             for name, data in files))  # in git's order: by name
        written = record.writtenAt if record.writtenAt.tzinfo else record.writtenAt.replace(tzinfo=UTC)
        agent = git.Actor("reconciler-agent", f"{record.site}@reconciler.local")
        commit = git.Commit.create_from_tree(
            self._repo, git.Tree(self._repo, tree), _commit_message(record),
            parent_commits=[git.Commit(self._repo, bytes.fromhex(parent))] if parent else [],
            author=agent, committer=agent, author_date=written, commit_date=written,
        )
        return commit.hexsha

    def _store(self, kind: bytes, data: bytes) -> bytes:
        return self._repo.odb.store(IStream(kind, len(data), io.BytesIO(data))).binsha

    def _push(self, commit: str, site: str) -> bool:
        """True when pushed; False when the remote refused to fast-forward (the ref moved). Any
        other refusal (permissions, a hook, a full disk) is an error in git's words."""
        status, out, err = self._repo.git.push(
            "--porcelain", "--", self._source.url, f"{commit}:{status_ref(site)}",
            with_extended_output=True, with_exceptions=False, kill_after_timeout=self._source.timeout,
        )
        if status == 0:
            return True
        if any(line.startswith("!") and "[rejected]" in line for line in out.splitlines()):
            return False
        words = "; ".join(filter(None, (git_words(err), *_refusals(out))))
        raise describe_git_failure(words or f"exit status {status}", f"git push {self._source.url}",
                                   "StatusPushFailed", access="write to")


def _refusals(porcelain: str) -> list[str]:
    """The refs a push could not update, with the remote's reason: ``[remote rejected] (why)``."""
    return [line.split("\t")[-1] for line in porcelain.splitlines() if line.startswith("!")]


def _commit_message(record: StatusRecord) -> str:
    """Subject: each deployment's state and version, a move shown as ``old->new``, then why; a
    site-level error (the repo unreadable, manifests invalid) first, for the deployments keep the
    picture of the last record and would read as if all were well."""
    parts = [f"{name} {status.version_shown} {status.state} ({status.reason})"
             for name, status in sorted(record.deployments.items())]
    if parts and record.state == "error" and all(s.reason != record.reason for s in record.deployments.values()):
        parts.insert(0, f"error ({record.reason})")
    subject = f"{record.site}: {'; '.join(parts) if parts else f'{record.state} ({record.reason})'}"
    body = f"{record.reason}: {record.message}" if record.message else record.reason
    return f"{subject}\n\n{body}\n"
