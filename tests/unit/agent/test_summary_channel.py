"""The Git status channel with summaries (agent/channel.py): with each record it writes the
site's entry only for the gated deployments whose report changed, retries one that failed on the
next publish, and reads the gated deployments' summaries instead of every record. In-memory
doors; the real ones are tested in tests/integration/test_summary_gates.py and test_scale_git.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.agent.channel import GitStatusChannel
from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.gates import site_report
from reconciler.errors import Transient
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.status.signed import StatusKeyring

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def record(minute: int, state: str = "progressing", deployments: tuple[str, ...] = ("d", "e")) -> StatusRecord:
    statuses = {name: DeploymentStatus(model="m", state=state, version="1.1.0", rollout="r1", reason="Converged",
                                       since=T0) for name in deployments}
    return StatusRecord(site="s1", state=state, reason="Converged", deployments=statuses, agentVersion="0.1.0",
                        writtenAt=T0 + timedelta(minutes=minute))


class Refs:
    def __init__(self) -> None:
        self.written: list[StatusRecord] = []

    def write(self, record: StatusRecord) -> bool:
        self.written.append(record)
        return True

    def close(self) -> None:
        pass


class Summaries:
    """SummaryRefs: the record with the entries of ``gated`` in one push, then the roll-ups."""

    def __init__(self) -> None:
        self.written: list[StatusRecord] = []
        self.published: list[tuple[str, str, int]] = []
        self.failing = False
        self.read: list[str] = []

    def write(self, record: StatusRecord, gated: dict[str, int]) -> str:
        if self.failing:
            raise Transient("StatusPushFailed", "the push failed")
        self.written.append(record)
        self.published += [(record.state, name, shard) for name, shard in sorted(gated.items())]
        return "c0ffee"

    def reports(self, deployment: str, check: object = None) -> dict:
        self.read.append(deployment)
        return {"s2": site_report(record(1, "success").model_copy(update={"site": "s2"}), deployment)}

    def close(self) -> None:
        pass


@pytest.fixture
def channel() -> GitStatusChannel:
    return GitStatusChannel(Refs(), summaries=Summaries())


def test_an_entry_is_written_for_each_gated_deployment_whose_report_changed(channel):
    channel.publish(record(1), [], {"d": 0, "e": 3})
    channel.publish(record(2), [], {"d": 0, "e": 3})  # a newer record saying the same: no entry
    channel.publish(record(3, "success", ("d",)), [], {"d": 0, "e": 3})  # d succeeded, e left the record
    assert channel.summaries.published == [("progressing", "d", 0), ("progressing", "e", 3),
                                           ("success", "d", 0), ("success", "e", 3)]
    assert len(channel.summaries.written) == 3  # every record still goes to its status ref, with the entries


def test_an_entry_that_failed_is_written_by_the_next_publish(channel):
    channel.summaries.failing = True
    with pytest.raises(Transient):
        channel.publish(record(1), [], {"d": 0})
    channel.summaries.failing = False
    channel.publish(record(1), [], {"d": 0})
    assert channel.summaries.published == [("progressing", "d", 0)]


def test_gates_read_the_gated_deployments_summaries_alone(channel):
    fleet = channel.read_fleet(None, "c1", StatusKeyring(), {"d": 0})
    assert isinstance(fleet, FleetReports)
    assert channel.summaries.read == ["d"]
    assert fleet.of("d")["s2"].state == "success" and fleet.of("e") == {}


def test_without_summaries_nothing_is_summarised():
    plain = GitStatusChannel(Refs())
    plain.publish(record(1), [], {"d": 0})
    assert len(plain.refs.written) == 1
