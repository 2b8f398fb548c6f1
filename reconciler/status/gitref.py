"""Status records as commits on ``refs/reconciler/status/<site>`` in the fleet repository (or a
separate status repository: give it its own GitSource). Each commit's tree holds one file,
``status.json``, and ``status.json.sig`` when the site signs its records (status/signed.py);
``git log`` of a site's ref is that site's audit trail. Only the site writes its
ref, so pushes are plain fast-forwards and never conflict with other sites.

Records that do not parse are skipped with a logged warning: one broken site must not blind the
rest of the fleet's gates."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC
from typing import TypeVar

from pydantic import ValidationError

from reconciler import reasons
from reconciler.errors import Transient
from reconciler.gitdoor.git import Git, GitError
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
T = TypeVar("T")

STATUS_REF_PREFIX = "refs/reconciler/status/"
# In the cache only: audit commits made and not pushed yet (``queue``), on top of the status ref
QUEUE_REF_PREFIX = "refs/reconciler/audit-queue/"
STATUS_FILE = "status.json"
# receive-pack's answer when two pushes of one ref overlap: the later could not take the ref's lock
_LOST_RACE = "[remote rejected] (failed to update ref)"


def status_ref(site: str) -> str:
    return STATUS_REF_PREFIX + site


def queue_ref(site: str) -> str:
    return QUEUE_REF_PREFIX + site


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
    def _git(self) -> Git:
        return self._source.git

    def read_own(self, site: str) -> StatusRecord | None:
        """The newest record on the site's ref, as the remote has it now."""
        self._fetch_own(site)
        tip = self._local_tip(site)
        return self._record_at(tip, site, self._own_check(site)) if tip else None

    def write(self, record: StatusRecord, also: Sequence[tuple[str, str]] = ()) -> str | None:
        """Publish ``record`` unless it says what the current one says. Returns the new commit,
        or None when nothing was written. The cached tip is trusted (only this site writes the
        ref); if the remote moved anyway, the record is re-parented on the remote tip once.
        ``also``: (ref, commit) of refs only this site writes, set in the same push (one
        receive-pack, one advertisement), or alone when the record is not written."""
        site = record.site
        if self._local_tip(site) is None:
            self._fetch_own(site)  # first write from this cache: learn what is there
        for attempt in range(2):
            tip = self._local_tip(site)
            if record.same_as(self._record_at(tip, site, self._own_check(site)) if tip else None):
                if also and self._send([_forced(ref, commit) for ref, commit in also]):
                    self._cache_tips(also)
                return None
            commit = self._commit(record, parent=tip)
            if self.push_if_unchanged(commit, status_ref(site), also=also):
                self._cache_tips([(status_ref(site), commit), *also])
                return commit
            if attempt == 0:
                self._fetch_own(site)
        raise Transient(reasons.StatusPushFailed, f"{status_ref(site)} on {self._source.url} keeps moving under this site")

    def queue(self, record: StatusRecord) -> str | None:
        """Commit ``record`` in the cache on top of the commits waiting to be pushed (or of the
        status ref), without pushing: ``push_queued`` sends them all in one push. The queue is a
        ref of the cache repository, so a restart loses none of it. None: it says what the newest
        commit says."""
        site = record.site
        if self._local_tip(site) is None:
            self._fetch_own(site)  # first write from this cache: learn what is there
        tip = self._git.ref_tip(queue_ref(site)) or self._local_tip(site)
        if record.same_as(self._record_at(tip, site, self._own_check(site)) if tip else None):
            return None
        commit = self._commit(record, parent=tip)
        self._in_cache(self._git.update_ref, queue_ref(site), commit)
        return commit

    def queued(self, site: str) -> bool:
        return self._git.ref_tip(queue_ref(site)) is not None

    def push_queued(self, site: str) -> int:
        """Push the queued commits in one push, each still its own commit; how many went. If the
        remote ref moved meanwhile (only this site writes it, but a cache can be replaced), the
        queued records are committed again on the remote's tip, in order, and pushed once more."""
        head = self._git.ref_tip(queue_ref(site))
        if head is None:
            return 0
        for attempt in range(2):
            pushed = self._local_tip(site)
            chain = self._chain(pushed, head)
            if self.push_if_unchanged(head, status_ref(site)):
                self._in_cache(self._git.update_ref, status_ref(site), head)
                self._in_cache(self._git.delete_ref, queue_ref(site))
                return len(chain)
            if attempt == 0:
                self._fetch_own(site)
                head = self._recommit(site, chain)
        raise Transient(reasons.StatusPushFailed, f"{status_ref(site)} on {self._source.url} keeps moving under this site")

    def _chain(self, base: str | None, head: str) -> list[str]:
        """The commits from ``base`` (excluded) to ``head``, oldest first."""
        span = f"{base}..{head}" if base else head
        return self._in_cache(self._git.log, "--first-parent", "--reverse", "--format=%H", span).split()

    def _recommit(self, site: str, chain: list[str]) -> str:
        parent = self._local_tip(site)
        for commit in chain:
            record = self._record_at(commit, site)
            if record is not None:
                parent = self._commit(record, parent=parent)
        self._in_cache(self._git.update_ref, queue_ref(site), parent)
        return parent

    def read_all(self, check: RecordCheck | None = None) -> dict[str, StatusRecord]:
        """Every site's newest record: one fetch of all status refs, then reads through the
        source's one cat-file process, so thousands of sites cost one network round trip. With
        ``check``, only the records whose signatures it admits."""
        self._fetch(f"+{STATUS_REF_PREFIX}*:{STATUS_REF_PREFIX}*", options=("--prune",))
        records = {}
        for ref, commit in self.local_tips(STATUS_REF_PREFIX).items():
            site = ref.removeprefix(STATUS_REF_PREFIX)
            if (record := self._record_at(commit, site, check)) is not None:
                records[site] = record
        return records

    def history(self, site: str) -> list[tuple[str, StatusRecord]]:
        """Every record the site published, oldest first, with its commit."""
        self._fetch_own(site)
        if self._local_tip(site) is None:
            return []
        commits = self._in_cache(self._git.log, "--first-parent", "--reverse", "--format=%H", status_ref(site)).split()
        entries = ((commit, self._record_at(commit, site)) for commit in commits)
        return [(commit, record) for commit, record in entries if record is not None]

    @property
    def url(self) -> str:
        return self._source.url

    def fetch_refs(self, refspec: str, *options: str) -> None:
        """Fetch ``refspec`` into the cache (git sends its source as a protocol v2 ``ref-prefix``)."""
        self._fetch(refspec, options=options)

    def local_tips(self, prefix: str) -> dict[str, str]:
        """Each ref under ``prefix`` in the cache, and its commit (no request)."""
        return dict(line.split() for line in self._in_cache(self._git.for_each_ref, prefix, "%(refname) %(objectname)"))

    def fetch_tip(self, ref: str) -> str | None:
        """The remote's commit on ``ref``, fetched into the cache; None when the remote has none."""
        if self._fetch(f"+{ref}:{ref}"):
            return self._git.ref_tip(ref)
        if self._git.ref_tip(ref) is not None:
            self._in_cache(self._git.delete_ref, ref)
        return None

    def fetch_tips(self, *refs: str) -> dict[str, str | None]:
        """``fetch_tip`` of each of ``refs``, in one fetch (one round of requests) while the remote
        has them all; a missing one fails a fetch of several, so then each is fetched alone."""
        if self._fetch(*(f"+{ref}:{ref}" for ref in refs)):
            return {ref: self._git.ref_tip(ref) for ref in refs}
        return {ref: self.fetch_tip(ref) for ref in refs}

    def cached_tip(self, ref: str) -> str | None:
        """The commit on ``ref`` as the cache last fetched it (no request)."""
        return self._git.ref_tip(ref)

    def file_at(self, rev: str, name: str) -> bytes | None:
        try:
            return self._git.read_object(f"{rev}:{name}")
        except ValueError:  # cat-file found no such file
            return None

    def files_at(self, rev: str) -> dict[str, bytes]:
        """Every file at the top of ``rev``'s tree, read in one batch."""
        names = self._in_cache(self._git.tree_names, rev)
        return {name: data for name, data in zip(names, self._git.read_objects([f"{rev}:{n}" for n in names]),
                                                   strict=True) if data is not None}

    def warn_skipped(self, rev: str, why: str) -> None:
        log.warning("skipping %s: %s", rev, why)

    def _fetch_own(self, site: str) -> None:
        ref = status_ref(site)
        if not self._fetch(f"+{ref}:{ref}"):
            # The remote has no record (any more): forget ours so the next one starts afresh.
            if self._local_tip(site) is not None:
                self._in_cache(self._git.delete_ref, ref)

    def _fetch(self, *refspecs: str, options: tuple[str, ...] = ()) -> bool:
        """False when the remote lacks a ref a refspec names exactly."""
        try:
            self._git.fetch(self._source.url, *refspecs, options=options, timeout=self._source.timeout)
        except GitError as error:
            if "couldn't find remote ref" in git_error_message(error):
                return False
            raise git_failure(error, f"git fetch {self._source.url}", reasons.StatusFetchFailed) from error
        return True

    def _in_cache(self, command: Callable[..., T], *args: str) -> T:
        """A git command on the local cache, its failure a typed error (say, a lock a killed git
        left, which the agent removes before it tries again)."""
        try:
            return command(*args)
        except GitError as error:
            raise cache_failure(error, self._git.git_dir) from error

    def _cache_tips(self, pushed: Sequence[tuple[str, str]]) -> None:
        for ref, commit in pushed:
            self._in_cache(self._git.update_ref, ref, commit)

    def _local_tip(self, site: str) -> str | None:
        # read from the ref files, no process: write() asks on every reconcile that changed
        return self._git.ref_tip(status_ref(site))

    def _own_check(self, site: str) -> RecordCheck | None:
        """A signing site takes as its own only what its keys signed: a record someone else put
        on its ref must not slip into the next record it signs."""
        return RecordCheck(self._signer.own_keys(site)) if self._signer else None

    def _record_at(self, rev: str, site: str, check: RecordCheck | None = None) -> StatusRecord | None:
        data = self.file_at(rev, STATUS_FILE)
        if check is not None and not check.admit(site, rev, data, self.file_at(rev, SIGNATURE_FILE)):
            return None
        return parse_record(data, rev, site)

    def _commit(self, record: StatusRecord, parent: str | None) -> str:
        stored = record_json(record)
        files = [(STATUS_FILE, stored)] + ([(SIGNATURE_FILE, self._signer.sign(stored))] if self._signer else [])
        return self.commit_files(files, parent, _commit_message(record), record)

    def commit_files(self, files: list[tuple[str, bytes]], parent: str | None, message: str,
                     record: StatusRecord) -> str:
        """A commit of ``files`` on ``parent``, in the cache, by the record's site at its write time."""
        written = record.writtenAt if record.writtenAt.tzinfo else record.writtenAt.replace(tzinfo=UTC)
        return self._git.write_commit(files, message, parent,
                                      ("reconciler-agent", f"{record.site}@reconciler.local"), written)

    def push_if_unchanged(self, commit: str, ref: str, expected: str | None = None, lease: bool = False,
                          also: Sequence[tuple[str, str]] = ()) -> bool:
        """True when pushed; False when the remote refused to fast-forward (the ref moved), or,
        with ``lease``, when the remote's ``ref`` is not ``expected`` (None: absent) any more: a
        compare-and-swap. ``also``: (ref, commit) set in the same push whatever the remote has
        there (refs only this site writes). Any other refusal (permissions, a hook, a full disk,
        a server that denies non-fast-forward updates) is an error in git's words."""
        leased = (f"--force-with-lease={ref}:{expected or ''}",) if lease else ()
        return self._send([f"{commit}:{ref}", *(_forced(one, tip) for one, tip in also)], *leased, lease=lease)

    def _send(self, refspecs: list[str], *options: str, lease: bool = False) -> bool:
        status, out, err = self._git.push(self._source.url, refspecs, self._source.timeout, *options)
        if status == 0:
            return True
        if any(line.startswith("!") and "[rejected]" in line for line in out.splitlines()):
            return False
        if lease and _LOST_RACE in out and "cannot lock ref" in err:  # another writer held the ref's lock
            return False
        words = "; ".join(filter(None, (git_words(err), *_refusals(out))))
        raise describe_git_failure(words or f"exit status {status}", f"git push {self._source.url}",
                                   reasons.StatusPushFailed, access="write to")


def _forced(ref: str, commit: str) -> str:
    return f"+{commit}:{ref}"


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
