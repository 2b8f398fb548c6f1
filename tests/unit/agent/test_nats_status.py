"""The agent's NATS status channel: every record to the bucket, to Git only when what an auditor
reads changed; Git out of reach delays the audit, never fails the reconcile; the bucket refusing
does fail it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.agent.nats_status import NatsStatusChannel
from reconciler.errors import Transient
from reconciler.status.record import DeploymentStatus, StatusRecord

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class FakeBucket:
    def __init__(self) -> None:
        self.put: list[StatusRecord] = []
        self.failing: Exception | None = None

    def put_record(self, record: StatusRecord) -> None:
        if self.failing is not None:
            raise self.failing
        self.put.append(record)


class FakeRefs:
    def __init__(self) -> None:
        self.written: list[StatusRecord] = []
        self.failing: Exception | None = None

    def write(self, record: StatusRecord) -> None:
        if self.failing is not None:
            raise self.failing
        self.written.append(record)


def record(minute: int = 0, state: str = "progressing", active: str = "1.0.0", message: str = "", weights=None,
           reason: str = "Rolling") -> StatusRecord:
    when = T0 + timedelta(minutes=minute)
    deployment = DeploymentStatus(model="m", state=state, version="1.1.0", activeVersion=active, wave="pilot",
                                  reason=reason, message=message, weights=weights or {}, since=T0)
    return StatusRecord(site="store-1", state=state, reason=reason, message=message, deployments={"d": deployment},
                        agentVersion="t", writtenAt=when)


@pytest.fixture
def channel():
    return NatsStatusChannel(FakeBucket(), FakeRefs())


def test_only_changes_an_auditor_reads_reach_git(channel):
    records = [record(0), record(1, message="baking until 10:05"), record(2, weights={"1.1.0": 50}),
               record(3, state="success", active="1.1.0", reason="Active"), record(4, state="success", active="1.1.0",
                                                                                   reason="Active", message="again")]
    for each in records:
        channel.publish(each, [])
    assert channel.nats.put == records
    assert channel.audit.written == [records[0], records[3]]


def test_a_new_failure_reason_is_audited(channel):
    channel.publish(record(0, state="failure", reason="ValidationFailed"), [])
    channel.publish(record(1, state="failure", reason="ModelLoadFailed"), [])
    assert len(channel.audit.written) == 2


def test_git_out_of_reach_delays_the_audit_to_the_next_publish(channel, caplog):
    channel.audit.failing = Transient("StatusPushFailed", "no route to host")
    channel.publish(record(0), [])
    assert "audit record not written to Git" in caplog.text and channel.nats.put == [record(0)]
    channel.audit.failing = None
    channel.publish(record(1, message="still rolling"), [])  # same audit view, but Git has not got it yet
    assert channel.audit.written == [record(1, message="still rolling")]


def test_the_bucket_refusing_fails_the_publish_and_writes_nothing_to_git(channel):
    channel.nats.failing = Transient("StatusChannelUnreachable", "NATS does not answer")
    with pytest.raises(Transient):
        channel.publish(record(0), [])
    assert channel.audit.written == []


def test_without_audit_nothing_goes_to_git():
    channel = NatsStatusChannel(FakeBucket(), None)
    channel.publish(record(0), [])
    assert channel.nats.put == [record(0)]
