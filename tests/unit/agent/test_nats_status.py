"""The agent's NATS status channel: every record to the bucket, to Git only when what an auditor
reads changed; Git out of reach delays the audit, never fails the reconcile; the bucket refusing
does fail it. Records read from the bucket count only when the fleet's keyring admits their
signatures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from reconciler import reasons, trust
from reconciler.agent.nats_status import NatsStatusChannel
from reconciler.errors import Transient
from reconciler.status.nats_channel import envelope, receive, wire
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.status.signed import RecordSigner, StatusKeyring

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
        channel.publish(each, [], {})
    assert channel.nats.put == records
    assert channel.audit.written == [records[0], records[3]]


def test_a_new_failure_reason_is_audited(channel):
    channel.publish(record(0, state="failure", reason="ValidationFailed"), [], {})
    channel.publish(record(1, state="failure", reason="ModelLoadFailed"), [], {})
    assert len(channel.audit.written) == 2


def test_git_out_of_reach_delays_the_audit_to_the_next_publish(channel, caplog):
    channel.audit.failing = Transient("StatusPushFailed", "no route to host")
    channel.publish(record(0), [], {})
    assert "audit record not written to Git" in caplog.text and channel.nats.put == [record(0)]
    channel.audit.failing = None
    channel.publish(record(1, message="still rolling"), [], {})  # same audit view, but Git has not got it yet
    assert channel.audit.written == [record(1, message="still rolling")]


def test_the_bucket_refusing_fails_the_publish_and_writes_nothing_to_git(channel):
    channel.nats.failing = Transient("StatusChannelUnreachable", "NATS does not answer")
    with pytest.raises(Transient):
        channel.publish(record(0), [], {})
    assert channel.audit.written == []


def test_without_audit_nothing_goes_to_git():
    channel = NatsStatusChannel(FakeBucket(), None)
    channel.publish(record(0), [], {})
    assert channel.nats.put == [record(0)]


# --- signed records over NATS: checked as the Git channel checks its refs ----------------------

KEY, OTHER_KEY = trust.generate_private_key(), trust.generate_private_key()
KEYED = StatusKeyring({"store-1": (trust.TrustedKey("store-1/a", KEY.public_key()),)})


def value(site: str, signer: RecordSigner | None = None, state: str = "success") -> bytes:
    stored = wire(StatusRecord(site=site, state=state, reason="Converged", agentVersion="t", writtenAt=T0))
    return stored if signer is None else envelope(stored, signer.sign(stored))


class FakeView:
    """The bucket's watched view, holding values as a site put them."""

    def __init__(self, **values: bytes) -> None:
        self.values = values

    def received(self):
        return {site: receive(each, 1, site) for site, each in self.values.items()}


def tampered(site: str) -> bytes:
    """A signed envelope whose record was changed after signing."""
    wrapped = json.loads(value(site, RecordSigner((KEY,))))
    wrapped["record"] = wrapped["record"].replace('"success"', '"failure"')
    return json.dumps(wrapped).encode()


@pytest.mark.parametrize("put, keyring, counts, why", [
    (value("store-1", RecordSigner((KEY,))), KEYED, True, None),
    (value("store-1", RecordSigner((OTHER_KEY,))), KEYED, False, "forged/unknown key"),
    (tampered("store-1"), KEYED, False, "forged/unknown key"),
    (value("store-1"), KEYED, False, "unsigned, but the Site document enrolls a key"),
    (value("store-1"), StatusKeyring(), True, None),  # unsigned mode: a plain value, as before envelopes
    (value("store-1"), StatusKeyring(require_signed=True), False, "the fleet requires signed status"),
    (value("store-1", RecordSigner((KEY,))), StatusKeyring(require_signed=True), False, "enrolls no key"),
])
def test_records_over_nats_count_only_when_their_signature_is_admitted(put, keyring, counts, why, caplog):
    channel = NatsStatusChannel(FakeView(**{"store-1": put}), None)
    fleet = channel.read_fleet(None, "c1", keyring, {})
    assert ("store-1" in fleet) is counts
    ignored = [r for r in caplog.records if getattr(r, "reason", None) == reasons.StatusRecordIgnored]
    assert bool(ignored) is not counts
    if why is not None:
        assert why in ignored[0].getMessage()


def test_an_admitted_record_is_the_one_signed_and_each_forgery_is_warned_about_once(caplog):
    channel = NatsStatusChannel(FakeView(**{"store-1": value("store-1", RecordSigner((KEY,))),
                                            "store-2": value("store-2", RecordSigner((OTHER_KEY,)))}), None)
    keyring = StatusKeyring({**KEYED.keys, "store-2": (trust.TrustedKey("store-2/a", KEY.public_key()),)})
    for _ in range(2):
        fleet = channel.read_fleet(None, "c1", keyring, {})
        assert set(fleet) == {"store-1"} and fleet["store-1"].state == "success"
    warnings = [r for r in caplog.records if getattr(r, "reason", None) == reasons.StatusRecordIgnored]
    assert len(warnings) == 1 and "store-2" in warnings[0].getMessage()


@pytest.mark.parametrize("put", [b'{"record": "{}", "signature": 5}', b'{"record": 1}', b"{not json"])
def test_a_value_that_is_no_envelope_and_no_record_is_skipped(put, caplog):
    assert receive(put, 7, "store-1") is None
    assert "skipping status record revision 7 of site store-1" in caplog.text
