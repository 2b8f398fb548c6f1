"""Shard summaries (reconciler.delivery.summary) as commits on
``refs/reconciler/summary/<deployment>/<shard>``, updated by the sites themselves with
compare-and-swap: a site reads its shard's tip, folds its record in, and pushes a child of that
tip with ``--force-with-lease=<ref>:<tip>``; if another site got there first the push is refused,
and it reads again and retries after a random pause.

Then the site merges its shard's summary into the deployment's roll-up,
``refs/reconciler/rollup/<deployment>``: one commit whose tree holds every shard's summary as a
file (``0000.json``, ...), pushed with compare-and-swap too. Entries merge by their dates
(delivery/summary.py ``merged``), so a writer that lost the race merges again and nothing is
lost; it merges its shard's newest summary too, so one push carries the shard's other writers'
entries, and one that finds its entry already carried there by another writer stops. One that
loses twice leaves its entry to the next push of its shard's writers or to its own next read,
which rolls it up if nothing carried it: the roll-up is one ref for the whole deployment, and a
wave's writers queueing on it would get one push through per round trip. A gate reads one
deployment with one fetch of that one ref, and downloads only the shard files that changed since
its last read: its cost does not grow with the number of shards. Writes pay for it (two
compare-and-swaps; writes are rare beside reads, which repeat every interval while a rollout is
watched).

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
    WRITE_ATTEMPTS,
    Summary,
    SummaryEntry,
    decode,
    encode,
    entry_bytes,
    fold,
    lost_race_pause,
    merged,
    merged_reports,
)
from reconciler.errors import Transient
from reconciler.gitdoor.source import GitSource
from reconciler.status.gitref import StatusRefs
from reconciler.status.record import StatusRecord
from reconciler.status.signed import RecordCheck, RecordSigner

SUMMARY_REF_PREFIX = "refs/reconciler/summary/"
ROLLUP_REF_PREFIX = "refs/reconciler/rollup/"  # beside, not under, the shards: a ref cannot be a folder too
SUMMARY_FILE = "summary.json"
# a roll-up write's tries: the tip the last read saw, then the tip fetched after losing; beyond
# that, the site's next read rolls its entry up (if no other writer of its shard carried it)
ROLL_UP_ATTEMPTS = 2


def summary_ref(deployment: str, shard: int) -> str:
    return f"{SUMMARY_REF_PREFIX}{deployment}/{shard:04d}"


def rollup_ref(deployment: str) -> str:
    return f"{ROLLUP_REF_PREFIX}{deployment}"


def rollup_file(shard: int) -> str:
    return f"{shard:04d}.json"


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
        # (deployment, shard) -> this site's record whose entry other writers kept out of the roll-up
        self._unrolled: dict[tuple[str, int], StatusRecord] = {}
        self._signer = signer
        self._pause = pause
        self._rng = rng or random.Random()

    def close(self) -> None:
        self._refs.close()

    def reports(self, deployment: str, check: RecordCheck | None = None) -> dict[str, SiteReport]:
        """Every site's report on the deployment, merged from all its shards' entries in the
        roll-up that ``check`` admits: ``decide_gate``'s ``records``. A shard that does not parse
        is skipped (one broken writer must not blind the gates), which the gate sees as its sites
        being silent. First, this site's own entries that other writers kept out of the roll-up
        at their write are rolled up (or found carried there)."""
        self.roll_up_kept_out(deployment)
        tip = self._refs.fetch_tip(rollup_ref(deployment))
        files = self._refs.files_at(tip) if tip else {}
        return merged_reports((self._decode(data, f"{tip}:{name}", deployment) for name, data in sorted(files.items())),
                              admitted_by(check, deployment) if check is not None else None)

    def roll_up_kept_out(self, deployment: str) -> None:
        """Roll up this site's entries of ``deployment`` that other writers kept out of the roll-up
        when it wrote them (``publish``), unless a push of their shard carried them meanwhile; no
        request when there are none."""
        for (name, shard), record in sorted(self._unrolled.items()):
            if name == deployment:
                tips = self._refs.fetch_tips(rollup_ref(deployment), summary_ref(deployment, shard))
                shard_tip = tips[summary_ref(deployment, shard)]
                summary = self._read(shard_tip, deployment) if shard_tip else {}
                if self._roll_up(record, deployment, shard, summary, tips[rollup_ref(deployment)]):
                    del self._unrolled[(name, shard)]

    def publish(self, record: StatusRecord, deployment: str, shard: int) -> bool:
        """Fold ``record`` into its shard's summary, then that summary into the roll-up (or, when
        other writers keep it out, at this site's next read). False when the shard's summary
        already said it."""
        changed, summary = self._fold(record, deployment, shard)
        # The gate read before this write fetched the roll-up a moment ago: its tip is the first
        # guess. A stale guess costs one request (the lease fails before the push sends anything),
        # and a roll-up that already held this summary there holds it still (entries only get newer).
        ref = rollup_ref(deployment)
        if self._roll_up(record, deployment, shard, summary, self._refs.cached_tip(ref) or self._refs.fetch_tip(ref)):
            self._unrolled.pop((deployment, shard), None)
        else:
            self._unrolled[(deployment, shard)] = record
        return changed

    def _fold(self, record: StatusRecord, deployment: str, shard: int) -> tuple[bool, Summary]:
        ref = summary_ref(deployment, shard)
        for attempt in range(WRITE_ATTEMPTS):
            tip = self._refs.fetch_tip(ref)
            current = self._read(tip, deployment) if tip else {}
            folded = fold(current, record, deployment, self._signer.sign if self._signer else None)
            if folded == current:
                return False, current
            commit = self._refs.commit_files([(SUMMARY_FILE, encode(deployment, folded))], tip,
                                             f"{deployment}: {record.site} {record.state}\n", record)
            if self._refs.push_if_unchanged(commit, ref, tip, lease=True):
                return True, folded
            self._lost_race(attempt)
        raise Transient(reasons.StatusPushFailed, f"{ref} on {self._refs.url}: {WRITE_ATTEMPTS} writers in a row got there first")

    def _roll_up(self, record: StatusRecord, deployment: str, shard: int, summary: Summary, tip: str | None) -> bool:
        """The shard's summary merged into its file of the roll-up at ``tip``, unless the roll-up
        holds everything it says already (another writer of the shard carried it): True once it
        does. False when other writers got there first ROLL_UP_ATTEMPTS times: the ~100 writers
        of a shard that moved together would queue here one push per round trip, and each push
        carries the entries its shard held, so a loser's entry is most likely carried already, or
        rolled up at its next read (``reports``) with whatever its shard gathered meanwhile."""
        ref, name = rollup_ref(deployment), rollup_file(shard)
        for attempt in range(ROLL_UP_ATTEMPTS):
            if attempt:
                self._lost_race(attempt - 1)
                # Carry what the shard's other writers folded meanwhile: one push for all of them, and
                # each of them, finding its entry rolled up, stops. Both refs in one fetch.
                tips = self._refs.fetch_tips(ref, summary_ref(deployment, shard))
                tip, shard_tip = tips[ref], tips[summary_ref(deployment, shard)]
                summary = merged(summary, self._read(shard_tip, deployment) if shard_tip else {})
            files = self._refs.files_at(tip) if tip else {}
            current = self._decode(files[name], f"{tip}:{name}", deployment) if name in files else {}
            rolled = merged(current, summary)
            if rolled == current:
                return True
            files[name] = encode(deployment, rolled)
            commit = self._refs.commit_files(sorted(files.items()), tip,
                                             f"{deployment}: shard {shard}: {record.site} {record.state}\n", record)
            if self._refs.push_if_unchanged(commit, ref, tip, lease=True):
                return True
        return False

    def _lost_race(self, attempt: int) -> None:
        self._pause(lost_race_pause(attempt, self._rng))

    def _read(self, rev: str, deployment: str) -> Summary:
        return self._decode(self._refs.file_at(rev, SUMMARY_FILE) or b"", rev, deployment)

    def _decode(self, data: bytes, where: str, deployment: str) -> Summary:
        try:
            return decode(data, deployment)
        except ValueError as error:
            self._refs.warn_skipped(where, str(error))
            return {}
