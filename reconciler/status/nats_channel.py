"""Status records and fleet-commit wake-ups over NATS JetStream key-value, for fleets that have
outgrown one Git server (README "NATS channel").

Three buckets: the records bucket holds each site's newest record under its name (with a few
revisions of history), the fleet bucket the fleet's newest commit under ``commit`` (``reconciler
notify`` puts it on push), and the summaries bucket the shard summaries the gates read
(status/nats_summaries.py, through ``run``). Every site subscribes to the commit key's subject
(plain NATS, no consumer per site) to be woken at once. Whoever asks for every record
(``received``: ``reconciler status``/``report --nats-server``; the agent's gates read summaries)
watches the records bucket from then on, so a read is the in-memory view, no round trip per site.

nats-py is asyncio and the agent is threaded: each channel owns one event loop in a daemon thread.
The loop connects, binds the buckets, follows them, and on any loss (server restart, network)
drops the connection and starts over with backoff: a fresh watch is a fresh snapshot of every
key, and the site's own newest record is put again if the bucket lost or missed it, so a site
that was away converges when it is back. Reads made while no snapshot is current fail as
Transient rather than decide on a view that cannot be refreshed.

A site with status keys puts each record in an envelope, ``{"record": <its compact JSON, as a
string>, "signature": <status.json.sig's lines>}``, signed over the same canonical bytes as its
Git record (status/signed.py), so one put carries both; any other value is a record put unsigned
(as every record was before envelopes)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import nats
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from reconciler import reasons
from reconciler.errors import Transient
from reconciler.settings import NatsSettings
from reconciler.status.gitref import parse_record
from reconciler.status.nats_direct import DirectGets
from reconciler.status.record import StatusRecord
from reconciler.status.signed import RecordSigner

log = logging.getLogger(__name__)

COMMIT_KEY = "commit"
_FIRST_BACKOFF, _LONGEST_BACKOFF = 0.25, 30.0


def wire(record: StatusRecord) -> bytes:
    """Compact JSON: Git's copy is indented for line diffs, this one only travels."""
    return record.model_dump_json().encode()


@dataclass(frozen=True)
class Received:
    """A record as the bucket holds it: the bytes its signature covers, and that signature (None:
    put unsigned), for a RecordCheck to admit or ignore."""

    record: StatusRecord
    stored: bytes
    signature: bytes | None

    @property
    def id(self) -> str:
        """Names what was put (record and signature), as a status commit's id does in Git."""
        return hashlib.sha256(self.stored + b"\0" + (self.signature or b"")).hexdigest()


def envelope(stored: bytes, signature: bytes) -> bytes:
    return json.dumps({"record": stored.decode(), "signature": signature.decode()}, separators=(",", ":")).encode()


def _unwrap(value: bytes) -> tuple[bytes, bytes | None]:
    """An envelope's record and signature; any other value is a record put unsigned."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return value, None
    if isinstance(parsed, dict) and set(parsed) == {"record", "signature"} \
            and all(isinstance(part, str) for part in parsed.values()):
        return parsed["record"].encode(), parsed["signature"].encode()
    return value, None


def receive(value: bytes, revision: int, site: str) -> Received | None:
    stored, signature = _unwrap(value)
    record = parse_record(stored, f"revision {revision}", site)
    return Received(record, stored, signature) if record is not None else None


class NatsChannel:
    """``site``: whose record this channel puts (None: a notifier or an observer); ``on_commit``:
    called with every new fleet commit seen, from the channel's thread; ``signer``: the site's
    status keys, which sign every record it puts (None: put unsigned); ``create_buckets``: False
    for a reader that must not change the server (a missing bucket stays missing, ``has_bucket``)."""

    def __init__(self, settings: NatsSettings, site: str | None = None,
                 on_commit: Callable[[str], None] | None = None, signer: RecordSigner | None = None,
                 create_buckets: bool = True):
        self.settings, self.site, self.on_commit, self.signer = settings, site, on_commit, signer
        self._creates = create_buckets  # False: a reader that must not change the server binds what exists
        self.fleet_commit: str | None = None
        self._records: dict[str, Received] = {}  # the watched view: site -> newest record
        self._watching = False  # asked for the records (read_fleet): follow them from now on
        self._synced = threading.Event()  # the view is a current snapshot plus live updates
        self._ready = threading.Event()  # connected and bound
        self._own: tuple[str, bytes] | None = None  # this site's newest value put, put again after a loss
        self._watch: asyncio.Task | None = None
        self._nc = None
        self.direct: DirectGets | None = None  # the connection's batched direct gets (status/nats_summaries.py reads with them)
        self._seen = 0  # the newest revision of the records bucket the watch has delivered
        self.connections = 0  # connections made and bound so far: a reader's cursors hold within one
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"nats-{site or 'client'}", daemon=True)
        self._thread.start()
        self._supervisor = asyncio.run_coroutine_threadsafe(self._supervise(), self._loop)

    # --- called from the agent's thread ----------------------------------------------------------

    def records(self) -> dict[str, StatusRecord]:
        return {site: received.record for site, received in self.received().items()}

    def received(self) -> dict[str, Received]:
        """Every site's newest record with its signature, from the watched view once it holds every revision the
        bucket had when asked: one round trip, whatever the fleet's size. A view that does not
        catch up in time (a watch a leaf node's lost link left behind) is watched afresh."""
        if not self._watching:
            self._watching = True
            self._call(self._start_watch())
        newest = self._call(self._newest_revision())
        deadline = time.monotonic() + self.settings.timeout
        while not (self._synced.is_set() and self._seen >= newest):
            if time.monotonic() > deadline:
                self._call(self._start_watch(afresh=True))
                raise self._unreachable(f"sent records up to revision {self._seen} of {newest}; watching afresh")
            time.sleep(0.01)
        return dict(self._records)

    def record(self, site: str) -> StatusRecord | None:
        """One site's newest record, asked of the bucket: a site that never reads gates never watches."""
        return self._call(self._get_record(site))

    def put_record(self, record: StatusRecord) -> None:
        stored = wire(record)
        value = stored if self.signer is None else envelope(stored, self.signer.sign(stored))
        self._own = (record.site, value)
        self._call(self._put(self.settings.records_bucket, record.site, value))

    def put_commit(self, commit: str) -> None:
        self._call(self._put(self.settings.fleet_bucket, COMMIT_KEY, commit.encode()))

    def has_bucket(self, name: str) -> bool:
        """Whether the server held the bucket when this connection bound it (a channel that creates
        buckets binds them all)."""
        return self._call(self._has_bucket(name))

    def run(self, work: Callable[[Any, Any], Coroutine[Any, Any, Any]]) -> Any:
        """``work(jetstream, summaries bucket)`` on the channel's loop, its failure Transient: the
        door through which status/nats_summaries.py reads and writes the summaries bucket."""
        return self._call(self._with_summaries(work))

    async def _with_summaries(self, work: Callable[[Any, Any], Coroutine[Any, Any, Any]]) -> Any:
        return await work(self._js, self._kv[self.settings.summaries_bucket])

    async def publish(self, subject: str, value: bytes, headers: dict[str, str] | None = None) -> int:
        """A JetStream publish to ``$KV.<bucket>.<key>``, through the domain's API when there is one:
        nats-py 2.16 puts to $KV.<bucket>.<key> even in a domain, which does not cross a leaf node
        (nats-io/nats.py#1010, fixed upstream by #1011), so this goes as nats.go does. Its stream
        sequence: the key's new revision."""
        if self.settings.domain is not None:
            subject = f"{self._api_prefix}.{subject}"
        return (await self._js.publish(subject, value, headers=headers)).seq

    @property
    def _api_prefix(self) -> str:
        """JetStream's API subjects, through the domain's when there is one (as nats.go names them)."""
        return "$JS.API" if self.settings.domain is None else f"$JS.{self.settings.domain}.API"

    def close(self) -> None:
        """Stop the loop and its thread; nothing of the channel runs after this returns."""
        if not self._thread.is_alive():
            return
        self._supervisor.cancel()
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(self.settings.timeout + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.settings.timeout + 5)
        self._loop.close()

    def _call(self, work: Coroutine[Any, Any, Any]) -> Any:
        if not self._ready.wait(self.settings.timeout):
            work.close()
            raise self._unreachable("does not answer")
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(self.settings.timeout * 2)
        except Exception as error:  # nats-py's timeouts, a dropped connection, a refused request
            future.cancel()
            raise self._unreachable(f"refused or lost the request: {type(error).__name__} {error}") from error

    def _unreachable(self, what: str) -> Transient:
        return Transient(reasons.StatusChannelUnreachable, f"NATS at {', '.join(self.settings.servers)} {what}; "
                                                     "the site keeps serving and tries again")

    # --- the channel's own loop ------------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            lost = asyncio.Event()
            try:
                self._nc = await nats.connect(**self._options(lost))
                self._js = self._nc.jetstream(timeout=self.settings.timeout, domain=self.settings.domain)
                self.direct = DirectGets(self._nc, self._api_prefix, self.settings.timeout)
                await self.direct.start()
                await self._bind_buckets()
                self.connections += 1
                await self._follow(lost)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("NATS %s: %s %s; reconnecting", ", ".join(self.settings.servers), type(error).__name__, error)
            else:
                backoff = _FIRST_BACKOFF  # it had worked: the next attempt starts quickly again
            finally:
                await self._drop()
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, _LONGEST_BACKOFF)

    async def _follow(self, lost: asyncio.Event) -> None:
        """Live until the connection is lost: the commit key's subject, the records if asked for."""
        await self._nc.subscribe(f"$KV.{self.settings.fleet_bucket}.{COMMIT_KEY}", cb=self._commit_message)
        if self.settings.fleet_bucket in self._kv:
            try:
                self._saw_commit((await self._kv[self.settings.fleet_bucket].get(COMMIT_KEY)).value)
            except KeyNotFoundError:
                pass
        await self._put_own_again()
        self._ready.set()
        if self._watching:
            await self._start_watch()
        await lost.wait()

    async def _start_watch(self, afresh: bool = False) -> None:
        if afresh:
            self._stop_watch()
        if self._watch is None:  # no await between the check and the task: one watch at a time
            self._watch = asyncio.create_task(self._take_records())

    def _stop_watch(self) -> None:
        self._synced.clear()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    async def _take_records(self) -> None:
        """A snapshot of every key, then live updates, into the view; ``_seen`` follows the revisions."""
        snapshot: dict[str, Received] = {}
        self._seen, connection, live = 0, self._nc, False
        watcher = await self._kv[self.settings.records_bucket].watchall()
        try:
            async for entry in watcher:
                if entry is None:  # the snapshot is complete: from here on, live updates
                    self._records, live = snapshot, True
                    self._synced.set()
                    continue
                record = receive(entry.value, entry.revision, entry.key) if entry.value else None
                target = self._records if live else snapshot
                if record is None:
                    target.pop(entry.key, None)
                else:
                    target[entry.key] = record
                self._seen = max(self._seen, entry.revision)
        finally:
            if connection is not None and not connection.is_closed:
                await watcher.stop()

    async def _newest_revision(self) -> int:
        return (await self._kv[self.settings.records_bucket].status()).stream_info.state.last_seq

    async def _put_own_again(self) -> None:
        """After a loss the bucket may lack this site's newest record (a put that failed, a server
        that lost its store): the site's own record is the truth, put it again."""
        if self._own is None:
            return
        site, value = self._own
        try:
            stored = (await self._kv[self.settings.records_bucket].get(site)).value
        except KeyNotFoundError:
            stored = None
        if stored != value:
            await self._put(self.settings.records_bucket, site, value)
            log.info("%s: newest record put (the bucket lacked it)", site)

    async def _get_record(self, site: str) -> StatusRecord | None:
        try:
            entry = await self._kv[self.settings.records_bucket].get(site)
        except KeyNotFoundError:
            return None
        received = receive(entry.value, entry.revision, site) if entry.value else None
        return received.record if received is not None else None

    async def _put(self, bucket: str, key: str, value: bytes) -> int:
        return await self.publish(f"$KV.{bucket}.{key}", value)

    async def _commit_message(self, msg) -> None:
        self._saw_commit(msg.data)

    def _saw_commit(self, value: bytes) -> None:
        commit = value.decode(errors="replace").strip()
        if commit and commit != self.fleet_commit:
            self.fleet_commit = commit
            if self.on_commit is not None:
                self.on_commit(commit)

    async def _bind_buckets(self) -> None:
        settings, self._kv = self.settings, {}
        for name, config in ((settings.records_bucket, KeyValueConfig(bucket=settings.records_bucket,
                                                                        history=settings.history)),
                             (settings.fleet_bucket, KeyValueConfig(bucket=settings.fleet_bucket,
                                                                      history=settings.history)),
                             (settings.summaries_bucket, KeyValueConfig(bucket=settings.summaries_bucket, history=1,
                                                                          direct=True))):
            try:
                self._kv[name] = await self._js.key_value(name)
            except BucketNotFoundError:
                if self._creates:
                    self._kv[name] = await self._js.create_key_value(config)

    async def _has_bucket(self, name: str) -> bool:
        return name in self._kv

    def _options(self, lost: asyncio.Event) -> dict[str, Any]:
        settings = self.settings

        async def on_lost(*_: object) -> None:
            lost.set()

        async def on_error(error: Exception) -> None:
            log.debug("NATS: %s", error)

        options: dict[str, Any] = dict(
            servers=settings.servers, name=f"reconciler {self.site or 'client'}", connect_timeout=settings.timeout,
            allow_reconnect=False, disconnected_cb=on_lost, closed_cb=on_lost, error_cb=on_error)
        if settings.credentials_file is not None:
            options["user_credentials"] = str(settings.credentials_file)
        if settings.nkey_seed is not None:
            options["nkeys_seed"] = str(settings.nkey_seed)
        if settings.token_env is not None:
            options["token"] = os.environ.get(settings.token_env, "")
        if settings.tls_ca is not None or any(s.startswith("tls://") for s in settings.servers):
            options["tls"] = ssl.create_default_context(cafile=str(settings.tls_ca) if settings.tls_ca else None)
        return options

    async def _drop(self) -> None:
        self._ready.clear()
        self._stop_watch()
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), self.settings.timeout)
            except Exception as error:  # closing a dead connection: nothing to save
                log.debug("NATS close: %s", error)

    async def _shutdown(self) -> None:
        await self._drop()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
