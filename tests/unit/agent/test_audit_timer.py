"""The agent loop's audit timer: between reconciles the loop asks the status channel to push its
batched audit commits, and sleeps no longer than until they fall due (injected clock and wake, no
sleeping); a wake-up ends the wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.devtools.fakes import fake_site

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Wake:
    """threading.Event's surface: a wait advances the clock instead of sleeping; ``woken_at``
    sets the event once the clock reaches it."""

    def __init__(self, clock: Clock, woken_at: datetime | None = None) -> None:
        self.clock, self.woken_at, self.flag = clock, woken_at, False
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return self.flag

    def set(self) -> None:
        self.flag = True

    def clear(self) -> None:
        self.flag = False

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.clock.now += timedelta(seconds=seconds)
        if self.woken_at is not None and self.clock.now >= self.woken_at:
            self.flag = True
        return self.flag


def waiting_site(tmp_path, due: datetime | None, woken_at: datetime | None = None):
    clock = Clock()
    site = fake_site(tmp_path / "state", clock)
    site.agent.wake = Wake(clock, woken_at)
    site.status.audit_due = due
    return site, clock


@pytest.mark.parametrize("due, waits, pushed_at", [
    (None, [30.0], []),  # nothing queued: one wait for the interval
    (T0 + timedelta(seconds=12), [12.0, 18.0], [T0 + timedelta(seconds=12)]),  # pushed when due, then the rest
    (T0, [30.0], [T0]),  # due already: pushed before any wait
    (T0 + timedelta(seconds=45), [30.0], []),  # due after the next reconcile: that wait does not push
])
def test_the_wait_pushes_the_audit_when_it_falls_due(tmp_path, due, waits, pushed_at):
    site, clock = waiting_site(tmp_path, due)
    site.agent._wait(30.0)
    assert site.agent.wake.waits == waits
    assert [now for now, final in site.status.audit_pushes] == pushed_at
    assert clock.now == T0 + timedelta(seconds=30)


def test_a_wake_up_ends_the_wait_before_the_audit_is_due(tmp_path):
    site, clock = waiting_site(tmp_path, T0 + timedelta(seconds=20), woken_at=T0 + timedelta(seconds=5))
    site.agent.wake.wait(5.0)  # the webhook, five seconds in
    site.agent._wait(30.0)
    assert site.status.audit_pushes == [] and clock.now == T0 + timedelta(seconds=5)
