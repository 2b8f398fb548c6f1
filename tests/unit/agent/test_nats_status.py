"""The agent's NATS status channel: every record to the bucket, its entry to the gated
deployments' summaries, which the gates read; to Git only when what an auditor reads changed,
queued and pushed in one push a random share of the spread later (or at shutdown); Git out of
reach delays the audit, never fails the reconcile; the bucket refusing does fail it. (Signed
summary entries: tests/integration/test_nats_summaries.py.)"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.agent.nats_status import NatsStatusChannel
from reconciler.errors import Transient
from reconciler.status.nats_channel import receive
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.status.signed import StatusKeyring

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class FakeBucket:
    site = "store-1"

    def __init__(self) -> None:
        self.put: list[StatusRecord] = []
        self.failing: Exception | None = None

    def close(self) -> None:
        pass

    def put_record(self, record: StatusRecord) -> None:
        if self.failing is not None:
            raise self.failing
        self.put.append(record)


class FakeRefs:
    """The audit's StatusRefs: commits queued in the cache, pushed in one go."""

    def __init__(self, queued: list[StatusRecord] | None = None) -> None:
        self.waiting: list[StatusRecord] = list(queued or [])
        self.written: list[StatusRecord] = []  # on the remote, in push order
        self.pushes = 0
        self.failing: Exception | None = None

    def queue(self, record: StatusRecord) -> None:
        self.waiting.append(record)

    def queued(self, site: str) -> bool:
        return bool(self.waiting)

    def push_queued(self, site: str) -> int:
        if self.failing is not None:
            raise self.failing
        self.pushes += 1
        self.written += self.waiting
        pushed, self.waiting = len(self.waiting), []
        return pushed

    def close(self) -> None:
        pass


class FakeSummaries:
    def __init__(self, reports: dict[str, dict] | None = None) -> None:
        self.by_deployment = reports or {}
        self.published: list[tuple[str, str, int]] = []
        self.checks: list = []

    def reports(self, deployment: str, check=None) -> dict:
        self.checks.append(check)
        return self.by_deployment.get(deployment, {})

    def publish(self, record: StatusRecord, deployment: str, shard: int) -> bool:
        self.published.append((record.state, deployment, shard))
        return True


def record(minute: int = 0, state: str = "progressing", active: str = "1.0.0", message: str = "", weights=None,
           reason: str = "Rolling") -> StatusRecord:
    when = T0 + timedelta(minutes=minute)
    deployment = DeploymentStatus(model="m", state=state, version="1.1.0", activeVersion=active, wave="pilot",
                                  reason=reason, message=message, weights=weights or {}, since=T0)
    return StatusRecord(site="store-1", state=state, reason=reason, message=message, deployments={"d": deployment},
                        agentVersion="t", writtenAt=when)


SPREAD = 600.0


def channel_with(refs: FakeRefs | None, seed: int = 3) -> NatsStatusChannel:
    return NatsStatusChannel(FakeBucket(), FakeSummaries(), refs, audit_spread=SPREAD, rng=random.Random(seed))


@pytest.fixture
def channel():
    return channel_with(FakeRefs())


def first_due(seed: int = 3, at: datetime = T0) -> datetime:
    return at + timedelta(seconds=random.Random(seed).uniform(0, SPREAD))


def test_only_changes_an_auditor_reads_are_committed_for_git(channel):
    records = [record(0), record(1, message="baking until 10:05"), record(2, weights={"1.1.0": 50}),
               record(3, state="success", active="1.1.0", reason="Active"), record(4, state="success", active="1.1.0",
                                                                                   reason="Active", message="again")]
    for each in records:
        channel.publish(each, [], {})
    assert channel.nats.put == records
    channel.flush_audit(T0, final=True)
    assert channel.audit.written == [records[0], records[3]]


def test_a_new_failure_reason_is_audited(channel):
    channel.publish(record(0, state="failure", reason="ValidationFailed"), [], {})
    channel.publish(record(1, state="failure", reason="ModelLoadFailed"), [], {})
    assert len(channel.audit.waiting) == 2


@pytest.mark.parametrize("now, pushed", [
    (T0, False), (first_due() - timedelta(seconds=1), False), (first_due(), True), (T0 + timedelta(hours=1), True),
])
def test_queued_audit_commits_go_in_one_push_a_random_share_of_the_spread_after_the_first(channel, now, pushed):
    channel.publish(record(0), [], {})
    channel.publish(record(5, state="success", active="1.1.0", reason="Active"), [], {})  # a second, before the push
    due = channel.flush_audit(now)
    assert channel.audit.pushes == (1 if pushed else 0)
    assert channel.audit.written == ([record(0), record(5, state="success", active="1.1.0", reason="Active")]
                                     if pushed else [])
    assert due == (None if pushed else first_due())


def test_nothing_queued_nothing_due(channel):
    assert channel.flush_audit(T0) is None and channel.audit.pushes == 0


def test_shutdown_pushes_what_waits(channel):
    channel.publish(record(0), [], {})
    channel.close()
    assert channel.audit.written == [record(0)]


def test_commits_queued_before_a_restart_are_pushed_within_a_spread():
    channel = channel_with(FakeRefs(queued=[record(0)]))
    later = T0 + timedelta(hours=2)
    due = channel.flush_audit(later)
    assert due == first_due(at=later) and channel.audit.written == []
    assert channel.flush_audit(due) is None and channel.audit.written == [record(0)]


def test_git_out_of_reach_keeps_the_queue_and_tries_again_later(channel, caplog):
    channel.publish(record(0), [], {})
    channel.audit.failing = Transient("StatusPushFailed", "no route to host")
    due = channel.flush_audit(first_due())
    assert "audit commits not pushed to Git" in caplog.text and due > first_due()
    assert channel.audit.waiting == [record(0)] and channel.nats.put == [record(0)]
    channel.audit.failing = None
    assert channel.flush_audit(due) is None and channel.audit.written == [record(0)]


def test_the_bucket_refusing_fails_the_publish_and_commits_nothing_for_git(channel):
    channel.nats.failing = Transient("StatusChannelUnreachable", "NATS does not answer")
    with pytest.raises(Transient):
        channel.publish(record(0), [], {})
    assert channel.audit.waiting == [] and channel.flush_audit(T0, final=True) is None


def test_without_audit_nothing_goes_to_git():
    channel = channel_with(None)
    channel.publish(record(0), [], {})
    assert channel.nats.put == [record(0)] and channel.flush_audit(T0, final=True) is None


def test_gates_read_the_gated_deployments_summaries_and_publish_folds_into_them(channel):
    channel.summaries.by_deployment = {"d": {"store-2": "a report"}}
    fleet = channel.read_fleet(None, "c1", StatusKeyring(), {"d": 0, "e": 3})
    assert fleet.by_deployment == {"d": {"store-2": "a report"}, "e": {}}
    assert all(check is not None for check in channel.summaries.checks)  # entries are checked as records are
    channel.publish(record(0), [], {"d": 0})
    channel.publish(record(1, message="the same report"), [], {"d": 0})
    assert channel.summaries.published == [("progressing", "d", 0)]


@pytest.mark.parametrize("put", [b'{"record": "{}", "signature": 5}', b'{"record": 1}', b"{not json"])
def test_a_value_that_is_no_envelope_and_no_record_is_skipped(put, caplog):
    assert receive(put, 7, "store-1") is None
    assert "skipping status record revision 7 of site store-1" in caplog.text
