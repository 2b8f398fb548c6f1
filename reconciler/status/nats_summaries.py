"""Shard summaries (reconciler.delivery.summary) in the NATS summaries bucket: the NATS form of
status/summary_refs.py, so a site's gates read a deployment's shards, not every site's record.

Key ``<deployment>.<shard>`` (``shard`` as delivery/summary.py ``shard_of`` numbers it, the same
shards as Git mode) holds the shard's stored form (``encode``), zlib-compressed: the entries of a
shard repeat the same fields, and every reader of a moved shard downloads it. The bucket keeps one
revision per key (history 1) and answers direct gets.

Writing is compare-and-swap: a site gets its shard's key, folds its record in, and puts the result
only if the key's revision is still the one it read (``Nats-Expected-Last-Subject-Sequence``; 0:
the key must not exist yet); a writer that lost the race reads again after a random pause.

Reading follows the bucket's stream: a reader keeps each shard's summary and the newest stream
sequence it has read for the deployment, and asks for every message after that sequence on the
deployment's keys in one batched direct get (``next_by_subj``, status/nats_direct.py). As the
bucket keeps only each key's newest revision, a shard that moved since the last read comes once,
however many times it moved, and a read is one request whatever moved. The broker's work per read
is the shards that moved, not the updates times the readers (a watch delivers every update to
every watcher), and shards hold one wave's sites each, so a wave that moves moves its own shards. A new connection (a server restart, maybe without its
store) starts a reader's cursors afresh, and the site folds its own entries again."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import zlib
from collections.abc import Mapping

from nats.js.api import Header
from nats.js.errors import APIError, KeyNotFoundError

from reconciler import reasons
from reconciler.delivery.gates import SiteReport
from reconciler.delivery.summary import (
    WRITE_ATTEMPTS,
    Summary,
    decode,
    encode,
    fold,
    lost_race_pause,
    merged_reports,
)
from reconciler.errors import Transient
from reconciler.status.nats_channel import NatsChannel
from reconciler.status.record import StatusRecord
from reconciler.status.signed import RecordCheck, RecordSigner
from reconciler.status.summary_refs import admitted_by

__all__ = ["NatsSummaries", "summary_key"]

log = logging.getLogger(__name__)

_WRONG_LAST = (10071, 10164)  # JetStream: the subject's last sequence is not the one expected
_DELETED = ("DEL", "PURGE")  # a KV-Operation header: the key was deleted or purged


def summary_key(deployment: str, shard: int) -> str:
    return f"{deployment}.{shard:04d}"


class NatsSummaries:
    def __init__(self, channel: NatsChannel, signer: RecordSigner | None = None,
                 rng: random.Random | None = None):
        self._channel, self._signer = channel, signer
        self._rng = rng or random.Random()
        bucket = channel.settings.summaries_bucket
        self._stream, self._prefix = f"KV_{bucket}", f"$KV.{bucket}."
        self._shards: dict[str, dict[str, tuple[int, Summary]]] = {}  # deployment -> key -> revision, summary
        self._read_up_to: dict[str, int] = {}  # deployment -> the newest stream sequence read
        self._own: dict[tuple[str, int], StatusRecord] = {}  # (deployment, shard) -> the record folded last
        self._connection = 0  # the channel's connection the cursors and shards were read on
        self.pulled = 0  # bytes of summaries downloaded (for benchmarks)
        self.requests = 0  # direct get requests sent (for benchmarks)
        self.pulled_messages = 0  # shards' revisions downloaded (for benchmarks)

    def reports(self, deployment: str, check: RecordCheck | None = None) -> dict[str, SiteReport]:
        """Every site's report on the deployment from the newest entries of all its shards that
        ``check`` admits (``decide_gate``'s ``records``), after pulling the shards that moved."""
        self._channel.run(lambda js, kv: self._read(js, kv, deployment))
        shards = self.shards(deployment)
        return merged_reports((shards[key][1] for key in sorted(shards)),
                              admitted_by(check, deployment) if check is not None else None)

    def shards(self, deployment: str) -> Mapping[str, tuple[int, Summary]]:
        """Each shard's newest summary read, with its revision."""
        return self._shards.get(deployment, {})

    def publish(self, record: StatusRecord, deployment: str, shard: int) -> bool:
        """Fold ``record`` into its shard's summary; False when the summary already said it."""
        return self._channel.run(lambda js, kv: self._publish(kv, record, deployment, shard))

    async def _read(self, js, kv, deployment: str) -> None:
        await self._fresh(kv)
        await self.catch_up(deployment)

    async def _publish(self, kv, record: StatusRecord, deployment: str, shard: int) -> bool:
        await self._fresh(kv)
        self._own[(deployment, shard)] = record
        return await self._fold(kv, record, deployment, shard)

    async def _fresh(self, kv) -> None:
        """On a new connection the server may be another, or have lost its store (its stream
        sequences start again): read every shard afresh, and fold this site's entries again
        (folding what a summary holds writes nothing), as its record is put again."""
        if self._channel.connections == self._connection:
            return
        self._connection = self._channel.connections
        self._shards.clear()
        self._read_up_to.clear()
        for (deployment, shard), record in sorted(self._own.items()):
            await self._fold(kv, record, deployment, shard)

    async def catch_up(self, deployment: str) -> None:
        """Pull the deployment's shards that moved since the last read, in one batched direct get
        (on the channel's loop: a process that reads for many sites runs many at once)."""
        shards = self._shards.setdefault(deployment, {})
        moved, requests = await self._channel.direct.after(self._stream, f"{self._prefix}{deployment}.*",
                                                           self._read_up_to.get(deployment, 0))
        self.requests += requests
        self.pulled_messages += len(moved)
        for message in moved:
            key = message.subject.removeprefix(self._prefix)
            deleted = message.headers.get("KV-Operation") in _DELETED
            self.pulled += len(message.data)
            shards[key] = (message.sequence, {} if deleted else self._decode(message.data, f"revision {message.sequence}",
                                                                             deployment))
            self._read_up_to[deployment] = message.sequence

    async def _fold(self, kv, record: StatusRecord, deployment: str, shard: int) -> bool:
        key = summary_key(deployment, shard)
        for attempt in range(WRITE_ATTEMPTS):
            try:
                entry = await kv.get(key)
                current, revision = self._decode(entry.value or b"", f"revision {entry.revision}", deployment), \
                    entry.revision
            except KeyNotFoundError as missing:  # never written, or deleted (then its marker's revision)
                current, revision = {}, getattr(getattr(missing, "entry", None), "revision", None) or 0
            folded = fold(current, record, deployment, self._signer.sign if self._signer else None)
            if folded == current:
                return False
            value = zlib.compress(encode(deployment, folded))
            try:
                await self._channel.publish(self._prefix + key, value,
                                            {Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(revision)})
                return True
            except APIError as error:
                if error.err_code not in _WRONG_LAST:
                    raise
            await asyncio.sleep(lost_race_pause(attempt, self._rng))
        raise Transient(reasons.StatusPushFailed, f"summary {key} in NATS bucket {self._channel.settings.summaries_bucket}: "
                                                  f"{WRITE_ATTEMPTS} writers in a row got there first")

    def _decode(self, data: bytes, where: str, deployment: str) -> Summary:
        """A shard that does not parse is skipped, as in Git mode: one broken writer must not blind
        the gates (its sites count as silent), and the next writer of the shard replaces it."""
        try:
            return _decoded(data, deployment)
        except (ValueError, zlib.error) as error:
            log.warning("skipping summary %s of %s in NATS: %s", where, deployment, error)
            return {}


@functools.lru_cache(maxsize=1024)
def _decoded(data: bytes, deployment: str) -> Summary:
    """A stored shard, decoded once per process however many sites (a benchmark's, ``status``'s)
    read it; summaries are never changed in place, so sharing one is safe."""
    return decode(zlib.decompress(data), deployment)

