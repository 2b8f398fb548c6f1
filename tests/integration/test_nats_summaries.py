"""Shard summaries in the NATS summaries bucket (status/nats_summaries.py) on a real nats-server:
gates decided from a reader that catches up on the shards that moved decide as gates from the
sites' newest records (random fleets and histories, reads at random points); sites folding into
one shard at once lose no entry (compare-and-swap); a reader counts only the entries the keyring
admits; a shard that does not parse is skipped, and the next writer replaces it; after a server
lost its store, sites fold their entries again and readers read afresh."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import reasons, trust
from reconciler.delivery.gates import decide_gate, site_report
from reconciler.devtools.natsserver import NatsServer
from reconciler.errors import Transient
from reconciler.settings import NatsSettings
from reconciler.status.nats_channel import NatsChannel
from reconciler.status.nats_summaries import NatsSummaries, summary_key
from reconciler.status.signed import RecordCheck, RecordSigner, StatusKeyring
from tests.unit.delivery.test_summary import DEPLOYMENT, RID, T0, fleets, record

NAMES = itertools.count()


@pytest.fixture(scope="module")
def channel(tmp_path_factory):
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        channel = NatsChannel(NatsSettings(servers=[server.url], timeout=10))
        yield channel
        channel.close()


def renamed(entry, deployment: str):
    """The record about ``deployment`` instead (each example its own deployment in one bucket)."""
    deployments = {deployment if name == DEPLOYMENT else name: status for name, status in entry.deployments.items()}
    return entry.model_copy(update={"deployments": deployments})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fleets(), st.lists(st.booleans(), min_size=60, max_size=60), st.integers(0, 400))
def test_gates_from_the_bucket_decide_as_gates_from_records(channel, fleet, reads, minute):
    rollout, sites, writes = fleet
    deployment = f"d{next(NAMES)}"
    writer, reader = NatsSummaries(channel), NatsSummaries(channel)
    newest = {}
    now = T0 + timedelta(minutes=minute)

    def same_decisions() -> None:
        from_records = {site: r for site, rec in newest.items() if (r := site_report(rec, deployment)) is not None}
        from_bucket = reader.reports(deployment)
        assert from_bucket == from_records
        for site in sites:
            assert decide_gate(rollout, deployment, RID, site, sites, from_bucket, now) == \
                decide_gate(rollout, deployment, RID, site, sites, from_records, now)

    for (entry, shard), read in zip(writes, reads, strict=False):
        entry = renamed(entry, deployment)
        newest[entry.site] = entry
        writer.publish(entry, deployment, shard)
        if read:  # the reader catches up on the shards that moved since its last read
            same_decisions()
    same_decisions()


def test_a_read_when_nothing_moved_is_one_request_and_downloads_nothing(channel):
    summaries, deployment = NatsSummaries(channel), f"d{next(NAMES)}"
    for shard in range(3):
        summaries.publish(record(f"s{shard}", 1, deployment=deployment), deployment, shard)
    summaries.reports(deployment)
    requests, pulled, shards = summaries.requests, summaries.pulled, summaries.pulled_messages
    assert len(summaries.reports(deployment)) == 3
    assert (summaries.requests - requests, summaries.pulled - pulled, summaries.pulled_messages - shards) == (1, 0, 0)
    summaries.publish(record("s9", 2, deployment=deployment), deployment, 1)  # one shard moved: that shard alone comes
    assert set(summaries.reports(deployment)) == {"s0", "s1", "s2", "s9"}
    assert (summaries.requests - requests, summaries.pulled_messages - shards) == (2, 1)


def test_sites_folding_into_one_shard_at_once_lose_no_entry(channel):
    deployment = f"d{next(NAMES)}"
    writers = [NatsSummaries(channel) for _ in range(8)]

    def write(number: int) -> None:
        for minute in range(3):
            writers[number].publish(record(f"s{number}", minute + 1, deployment=deployment), deployment, 0)

    threads = [threading.Thread(target=write, args=(number,)) for number in range(len(writers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reports = NatsSummaries(channel).reports(deployment)
    assert {site: report.written_at for site, report in reports.items()} == \
        {f"s{number}": T0 + timedelta(minutes=3) for number in range(len(writers))}


def test_only_entries_the_keyring_admits_count(channel, caplog):
    key, other = trust.generate_private_key(), trust.generate_private_key()
    keyring = StatusKeyring({site: (trust.TrustedKey(f"{site}/a", key.public_key()),) for site in ("s1", "s2", "s3")})
    deployment = f"d{next(NAMES)}"
    NatsSummaries(channel, RecordSigner((key,))).publish(record("s1", 1, deployment=deployment), deployment, 0)
    NatsSummaries(channel, RecordSigner((other,))).publish(record("s2", 1, deployment=deployment), deployment, 0)  # a forger
    NatsSummaries(channel).publish(record("s3", 1, deployment=deployment), deployment, 0)  # unsigned, but s3 enrolls a key
    NatsSummaries(channel).publish(record("s4", 1, deployment=deployment), deployment, 0)  # unsigned, enrolls none
    reports = NatsSummaries(channel).reports(deployment, RecordCheck(keyring))
    assert set(reports) == {"s1", "s4"}
    ignored = " ".join(r.getMessage() for r in caplog.records if getattr(r, "reason", None) == reasons.StatusRecordIgnored)
    assert "s2" in ignored and "s3" in ignored and "s1" not in ignored


def test_a_shard_that_does_not_parse_is_skipped_and_the_next_writer_replaces_it(channel, caplog):
    deployment = f"d{next(NAMES)}"
    summaries = NatsSummaries(channel)
    summaries.publish(record("s1", 1, deployment=deployment), deployment, 1)

    async def scribble(js, kv):
        await kv.put(summary_key(deployment, 0), b"not a summary")

    channel.run(scribble)
    assert set(summaries.reports(deployment)) == {"s1"}
    assert "skipping summary revision" in caplog.text
    summaries.publish(record("s2", 2, deployment=deployment), deployment, 0)
    assert set(summaries.reports(deployment)) == {"s1", "s2"}


def test_after_a_server_lost_its_store_sites_fold_their_entries_again_and_readers_start_afresh(tmp_path):
    server = NatsServer(tmp_path / "nats").start()
    settings = NatsSettings(servers=[server.url], timeout=2)
    writing, reading = NatsChannel(settings, "s1"), NatsChannel(settings)
    try:
        writer, reader, deployment = NatsSummaries(writing), NatsSummaries(reading), "lost"
        for minute in range(1, 6):  # the reader's cursor moves past what the new store will hold
            writer.publish(record("s1", minute, deployment=deployment), deployment, 0)
            reader.reports(deployment)
        server.stop()
        shutil.rmtree(tmp_path / "nats" / "hub-store")
        server.start()
        NatsSummaries(writing).publish(record("s2", 1, deployment=deployment), deployment, 1)  # on the new store
        expected = {"s1": T0 + timedelta(minutes=5), "s2": T0 + timedelta(minutes=1)}
        _eventually(lambda: {s: r.written_at for s, r in writer.reports(deployment).items()} == expected)
        assert {s: r.written_at for s, r in reader.reports(deployment).items()} == expected
    finally:
        writing.close()
        reading.close()
        server.stop()


def _eventually(check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Transient:
            pass  # reconnecting
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)
