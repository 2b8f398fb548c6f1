"""Shard summaries (reconciler.delivery.summary) as commits on
``refs/reconciler/summary/<deployment>/<shard>``, updated by the sites themselves with
compare-and-swap: a site reads its shard's tip, folds its record in, and pushes a child of that
tip with ``--force-with-lease=<ref>:<tip>``; if another site got there first the push is refused,
and it reads again and retries after a random pause. A gate reads one deployment's summaries with
one fetch whose refspec git sends as a protocol v2 ``ref-prefix``, so it is told of the shards
alone: O(sites / SHARD_SIZE) small objects instead of every site's record.

Keep the summaries where a push is told of few refs (a push has no ``ref-prefix``: the server
advertises every ref of the repository), e.g. a namespace of their own on the server. Each
summary's ``git log`` is its history; the per-site audit trail stays on the status refs.

A site with status keys signs its entry (delivery/summary.py ``entry_bytes``); a reader given a
RecordCheck counts only the entries it admits, as it does status records: a forged, edited or
(for an enrolled site) unsigned entry is ignored with ``StatusRecordIgnored``."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable

from reconciler import reasons
from reconciler.delivery.gates import SiteReport
from reconciler.delivery.summary import (
    Summary,
    SummaryEntry,
    decode,
    encode,
    entry_bytes,
    fold,
    merged_reports,
)
from reconciler.errors import Transient
from reconciler.gitdoor.source import GitSource
from reconciler.status.gitref import StatusRefs
from reconciler.status.record import StatusRecord
from reconciler.status.signed import RecordCheck, RecordSigner

SUMMARY_REF_PREFIX = "refs/reconciler/summary/"
SUMMARY_FILE = "summary.json"
_ATTEMPTS = 12
_PAUSE = 0.05  # seconds, the first retry's longest pause; it doubles with every conflict


def summary_ref(deployment: str, shard: int) -> str:
    return f"{SUMMARY_REF_PREFIX}{deployment}/{shard:04d}"


def admitted_by(check: RecordCheck, deployment: str) -> Callable[[str, SummaryEntry], bool]:
    """Whether a site's entry in a summary of ``deployment`` counts: checked as a record is."""

    def admit(site: str, entry: SummaryEntry) -> bool:
        signed = entry_bytes(site, deployment, entry)
        entry_id = hashlib.sha256(signed + b"\0" + (entry.signature or b"")).hexdigest()
        return check.admit(site, entry_id, signed, entry.signature)

    return admit


class SummaryRefs:
    def __init__(self, source: GitSource, pause: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, signer: RecordSigner | None = None):
        self._refs = StatusRefs(source)  # the same cache and git plumbing as the status records
        self._signer = signer
        self._pause = pause
        self._rng = rng or random.Random()

    def close(self) -> None:
        self._refs.close()

    def reports(self, deployment: str, check: RecordCheck | None = None) -> dict[str, SiteReport]:
        """Every site's report on the deployment, merged from all its shards' entries that
        ``check`` admits: ``decide_gate``'s ``records``. A shard that does not parse is skipped
        (one broken writer must not blind the gates), which the gate sees as its sites being silent."""
        prefix = f"{SUMMARY_REF_PREFIX}{deployment}/"
        self._refs.fetch_refs(f"+{prefix}*:{prefix}*", "--prune")
        return merged_reports((self._read(ref, deployment) for ref in self._refs.local_refs(prefix)),
                              admitted_by(check, deployment) if check is not None else None)

    def publish(self, record: StatusRecord, deployment: str, shard: int) -> bool:
        """Fold ``record`` into its shard's summary. False when the summary already says it."""
        ref = summary_ref(deployment, shard)
        for attempt in range(_ATTEMPTS):
            tip = self._refs.fetch_tip(ref)
            current = self._read(tip, deployment) if tip else {}
            folded = fold(current, record, deployment, self._signer.sign if self._signer else None)
            if folded == current:
                return False
            commit = self._refs.commit_files([(SUMMARY_FILE, encode(deployment, folded))], tip,
                                             f"{deployment}: {record.site} {record.state}\n", record)
            if self._refs.push_if_unchanged(commit, ref, tip, lease=True):
                return True
            self._pause(self._rng.uniform(0, _PAUSE * 2**min(attempt, 6)))
        raise Transient(reasons.StatusPushFailed, f"{ref} on {self._refs.url}: {_ATTEMPTS} writers in a row got there first")

    def _read(self, rev: str, deployment: str) -> Summary:
        data = self._refs.file_at(rev, SUMMARY_FILE)
        try:
            return decode(data or b"", deployment)
        except ValueError as error:
            self._refs.warn_skipped(rev, str(error))
            return {}
