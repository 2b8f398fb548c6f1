"""Summaries (reconciler.delivery.summary) in Git: each site's entry on a ref of its own in its
status repository, gathered by the writers into the deployment's roll-up, the one ref a gate reads.

A site writes its entry for a deployment as a parentless commit on
``refs/reconciler/entry/<deployment>/<site>`` of its ``statusRepo``, in the same push as its
status record: one file named after its shard (``0007.json``). Only the site writes that ref, so
the write races no one. It then gathers its shard: one fetch of the deployment's entry refs from that repository (a
shard's ≤ 100 sites when the status repositories are laid out per shard, as a status push needs
anyway), each site's entry in its tip's file of this shard. That gathered shard is merged into
the shard's file (``0007.json``) of the roll-up, ``refs/reconciler/rollup/<deployment>`` in the
``summaryRepo``: one commit whose tree holds every shard as a file, pushed with compare-and-swap
(``--force-with-lease=<ref>:<tip>``). Entries merge by their dates (delivery/summary.py
``merged``), so a writer that lost the race merges again and nothing is lost, and one push
carries every entry of the shard written so far: the shard's other writers find theirs rolled
up and stop. One that loses twice leaves its entry to the next push of its shard's writers or to
its own next gate read, which rolls it up if nothing carried it: the roll-up is one ref for the
whole deployment, and a wave's writers queueing on it would get one push through per round trip.

Entry refs replaced a summary ref per shard that the shard's writers updated with
compare-and-swap: the ~100 sites of a wave's shard move together, so they queued on it, each
lost race costing a fetch and a push (0.5–0.6 s of server CPU per site at 300–3 000 sites,
bench/bench_fleet_sim.py). An entry ref per site in the summary repository would race no one
either, but every push there would be told of all N refs.

A gate reads one deployment with one fetch of the roll-up ref, and downloads only the shard files
that changed since its last read: its cost does not grow with the number of shards. Each site's
history stays on its status ref; the roll-up's ``git log`` is the summaries' history.

A site with status keys signs its entry (delivery/summary.py ``entry_bytes``); a reader given a
RecordCheck counts only the entries it admits, as it does status records: a forged, edited or
(for an enrolled site) unsigned entry is ignored with ``StatusRecordIgnored``. A gatherer takes
from each entry ref the entry of the site the ref is named after, and no other."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Mapping

from reconciler.delivery.gates import SiteReport
from reconciler.delivery.summary import (
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
from reconciler.gitdoor.source import GitSource
from reconciler.status.gitref import StatusRefs
from reconciler.status.record import StatusRecord
from reconciler.status.signed import RecordCheck, RecordSigner

ENTRY_REF_PREFIX = "refs/reconciler/entry/"
ROLLUP_REF_PREFIX = "refs/reconciler/rollup/"
# a roll-up write's tries: the tip the last read saw, then the tip fetched after losing; beyond
# that, the site's next read rolls its entry up (if no other writer of its shard carried it)
ROLL_UP_ATTEMPTS = 2


def entry_refs(deployment: str) -> str:
    return f"{ENTRY_REF_PREFIX}{deployment}/"


def entry_ref(deployment: str, site: str) -> str:
    return f"{entry_refs(deployment)}{site}"


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


class RollUps:
    """The deployments' roll-ups in the summary repository, read."""

    def __init__(self, source: GitSource):
        self._refs = StatusRefs(source)  # the same cache and git plumbing as the status records

    def close(self) -> None:
        self._refs.close()

    def reports(self, deployment: str, check: RecordCheck | None = None) -> dict[str, SiteReport]:
        """Every site's report on the deployment, merged from all its shards' entries in the
        roll-up that ``check`` admits: ``decide_gate``'s ``records``. A shard that does not parse
        is skipped (one broken writer must not blind the gates), which the gate sees as its sites
        being silent."""
        tip = self._refs.fetch_tip(rollup_ref(deployment))
        files = self._refs.files_at(tip) if tip else {}
        return merged_reports((self._decode(data, f"{tip}:{name}", deployment) for name, data in sorted(files.items())),
                              admitted_by(check, deployment) if check is not None else None)

    def _decode(self, data: bytes, where: str, deployment: str) -> Summary:
        try:
            return decode(data, deployment)
        except ValueError as error:
            self._refs.warn_skipped(where, str(error))
            return {}


class SummaryRefs(RollUps):
    """A site's status records with its entries (``records``: its status repository) and its
    shards' roll-ups."""

    def __init__(self, source: GitSource, records: StatusRefs, pause: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, signer: RecordSigner | None = None):
        super().__init__(source)
        self._records = records
        # (deployment, shard) -> this site's record whose entry other writers kept out of the roll-up
        self._unrolled: dict[tuple[str, int], StatusRecord] = {}
        self._signer = signer
        self._pause = pause
        self._rng = rng or random.Random()

    def reports(self, deployment: str, check: RecordCheck | None = None) -> dict[str, SiteReport]:
        """As RollUps.reports, once this site's own entries that other writers kept out of the
        roll-up at their write are rolled up (or found carried there)."""
        self.roll_up_kept_out(deployment)
        return super().reports(deployment, check)

    def roll_up_kept_out(self, deployment: str) -> None:
        """Roll up this site's shards of ``deployment`` whose entries other writers kept out of the
        roll-up when it wrote them (``write``), unless a push of the shard carried them
        meanwhile; no request when there are none."""
        for (name, shard), record in sorted(self._unrolled.items()):
            if name == deployment and self._roll_up(record, deployment, shard, self._refs.fetch_tip(rollup_ref(name))):
                del self._unrolled[(name, shard)]

    def write(self, record: StatusRecord, gated: Mapping[str, int]) -> str | None:
        """``record`` on its status ref and, in the same push, its entry for each ``gated``
        deployment (name: the site's shard of it) on its entry ref where the entry changed; then
        each of those shards gathered into its deployment's roll-up (or, when other writers keep
        it out, at this site's next read). The status commit, or None when the record was there."""
        entries = [(entry_ref(name, record.site), commit) for name, shard in sorted(gated.items())
                   if (commit := self._entry_commit(record, name, shard)) is not None]
        written = self._records.write(record, also=entries)
        for name, shard in sorted(gated.items()):
            # The gate read before this write fetched the roll-up a moment ago: its tip is the first
            # guess. A stale guess costs one request (the lease fails before the push sends anything),
            # and a roll-up that already held the shard's entries holds them still (entries only get newer).
            ref = rollup_ref(name)
            if self._roll_up(record, name, shard, self._refs.cached_tip(ref) or self._refs.fetch_tip(ref)):
                self._unrolled.pop((name, shard), None)
            else:
                self._unrolled[(name, shard)] = record
        return written

    def _entry_commit(self, record: StatusRecord, deployment: str, shard: int) -> str | None:
        """The site's entry as a parentless commit (a gatherer downloads each site's newest entry
        alone, never its history), or None when its entry ref says it already."""
        name = rollup_file(shard)
        entry = fold({}, record, deployment, self._signer.sign if self._signer else None)
        tip = self._records.cached_tip(entry_ref(deployment, record.site))
        if tip is not None and self._entries_at(tip, name, deployment) == entry:
            return None
        return self._records.commit_files([(name, encode(deployment, entry))], None,
                                          f"{deployment}: {record.site} {record.state}\n", record)

    def _gather(self, deployment: str, shard: int) -> Summary:
        """The newest entry of each site of ``shard`` that writes to this site's status repository:
        one fetch of the deployment's entry refs there."""
        prefix, name = entry_refs(deployment), rollup_file(shard)
        self._records.fetch_refs(f"+{prefix}*:{prefix}*", "--prune")
        gathered = {}
        for ref, tip in self._records.local_tips(prefix).items():
            site = ref.removeprefix(prefix)
            if (entry := self._entries_at(tip, name, deployment).get(site)) is not None:
                gathered[site] = entry
        return gathered

    def _entries_at(self, tip: str, name: str, deployment: str) -> Summary:
        data = self._records.file_at(tip, name)
        return {} if data is None else self._decode(data, f"{tip}:{name}", deployment)

    def _roll_up(self, record: StatusRecord, deployment: str, shard: int, tip: str | None) -> bool:
        """The shard, gathered, merged into its file of the roll-up at ``tip``, unless the roll-up
        holds everything gathered already (another writer of the shard carried it): True once it
        does. False when other writers got there first ROLL_UP_ATTEMPTS times: a wave's writers
        would queue here one push per round trip, and each push carries what its shard gathered,
        so a loser's entry is most likely carried already, or rolled up at its next read
        (``reports``) with whatever its shard gathered meanwhile."""
        ref, name = rollup_ref(deployment), rollup_file(shard)
        for attempt in range(ROLL_UP_ATTEMPTS):
            if attempt:
                self._lost_race(attempt - 1)
                tip = self._refs.fetch_tip(ref)
            gathered = self._gather(deployment, shard)  # again after a loss: what the shard wrote meanwhile
            files = self._refs.files_at(tip) if tip else {}
            current = self._decode(files[name], f"{tip}:{name}", deployment) if name in files else {}
            rolled = merged(current, gathered)
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
