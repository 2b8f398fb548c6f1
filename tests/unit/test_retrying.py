"""The shared retry helper, table-driven with a fake deadline: no test sleeps."""

from __future__ import annotations

import math

import pytest

from reconciler.errors import Stalled, Transient
from reconciler.retrying import exponential, retry


class FakeDeadline:
    """A deadline whose clock moves only by the pauses asked for."""

    def __init__(self, seconds: float):
        self.seconds, self.now, self.pauses = seconds, 0.0, []

    def left(self) -> float:
        return self.seconds - self.now

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds

    def exceeded(self, last: Exception | None) -> Exception:
        return Transient("DeadlineExceeded", f"after {last}")


def failing(*outcomes: object):
    """An attempt that raises the given errors in turn, then returns the first non-error."""
    calls = []

    def attempt():
        outcome = outcomes[len(calls)]
        calls.append(outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    return attempt, calls


def transient(failure: Exception) -> bool:
    return isinstance(failure, Transient)


@pytest.mark.parametrize(("base", "attempt", "cap", "delay"), [
    (0.5, 1, math.inf, 0.5), (0.5, 2, math.inf, 1.0), (0.5, 4, math.inf, 4.0), (1.0, 10, 60, 60),
    (1.0, 6, 60, 32),
])
def test_exponential_doubles_per_attempt_up_to_the_cap(base, attempt, cap, delay):
    assert exponential(base, attempt, cap) == delay


@pytest.mark.parametrize(("outcomes", "attempts", "result", "calls", "pauses"), [
    (["ok"], 3, "ok", 1, []),
    ([Transient("A", "a"), "ok"], 3, "ok", 2, [0.5]),
    ([Transient("A", "a"), Transient("A", "b"), "ok"], 3, "ok", 3, [0.5, 1.0]),
])
def test_retried_failures_are_tried_again_after_a_growing_wait(outcomes, attempts, result, calls, pauses):
    attempt, made = failing(*outcomes)
    deadline = FakeDeadline(100)
    got = retry(attempt, attempts=attempts, backoff=0.5, retried=transient, deadline=deadline,
                jitter=lambda low, high: high)  # the top of the jitter range: the curve itself
    assert (got, len(made), deadline.pauses) == (result, calls, pauses)


def test_full_jitter_draws_between_zero_and_the_curve():
    asked = []
    attempt, _ = failing(Transient("A", "a"), Transient("A", "b"), "ok")
    retry(attempt, attempts=3, backoff=2.0, retried=transient, deadline=FakeDeadline(100),
          jitter=lambda low, high: asked.append((low, high)) or low)
    assert asked == [(0, 2.0), (0, 4.0)]


def test_a_failure_not_retried_is_raised_at_once():
    attempt, made = failing(Stalled("B", "bad"), "ok")
    with pytest.raises(Stalled, match="bad"):
        retry(attempt, attempts=3, backoff=0.5, retried=transient, deadline=FakeDeadline(100))
    assert len(made) == 1


def test_the_last_failure_is_raised_when_the_attempts_run_out():
    attempt, made = failing(Transient("A", "first"), Transient("A", "second"), "never")
    with pytest.raises(Transient, match="second"):
        retry(attempt, attempts=2, backoff=0.5, retried=transient, deadline=FakeDeadline(100))
    assert len(made) == 2


def test_no_wait_outlasts_the_deadline_and_no_attempt_starts_after_it():
    attempt, made = failing(Transient("A", "first"), "never")
    deadline = FakeDeadline(0.25)
    with pytest.raises(Transient, match="after .*first") as raised:
        retry(attempt, attempts=3, backoff=1.0, retried=transient, deadline=deadline,
              jitter=lambda low, high: high)
    assert raised.value.reason == "DeadlineExceeded" and deadline.pauses == [0.25] and len(made) == 1
    assert isinstance(raised.value.__cause__, Transient)


def test_a_deadline_already_past_allows_no_attempt():
    attempt, made = failing("never")
    with pytest.raises(Transient, match="DeadlineExceeded|after None"):
        retry(attempt, attempts=3, backoff=1.0, retried=transient, deadline=FakeDeadline(0))
    assert made == []


def test_at_least_one_attempt_is_asked_for():
    with pytest.raises(ValueError, match="at least 1"):
        retry(lambda: "ok", attempts=0, backoff=1.0, retried=transient, deadline=FakeDeadline(10))


class Busy(Transient):
    """A failure that says how long to leave the server alone (as Retry-After does)."""

    def __init__(self, wait: float | None):
        super().__init__("Busy", f"busy, come back in {wait}")
        self.wait = wait


@pytest.mark.parametrize(("asked", "cap", "deadline", "pauses", "outcome"), [
    ([5.0], 300, 100, [5.0], "ok"),  # longer than the backoff: the server's wait
    ([0.1], 300, 100, [0.5], "ok"),  # shorter: the backoff
    ([None], 300, 100, [0.5], "ok"),  # nothing asked: the backoff
    ([5.0, 7.0], 300, 100, [5.0, 7.0], "ok"),
    ([900.0], 60, 100, [60], "ok"),  # capped
    ([500.0], 300, 100, [], "DeadlineExceeded"),  # past the deadline: no sleeping through it
    ([3.0, 500.0], 300, 100, [3.0], "DeadlineExceeded"),
])
def test_a_wait_the_server_asked_for_is_honoured_within_the_deadline(asked, cap, deadline, pauses, outcome):
    attempt, made = failing(*[Busy(wait) for wait in asked], "ok")
    clock = FakeDeadline(deadline)
    try:
        got = retry(attempt, attempts=5, backoff=0.5, retried=transient, deadline=clock, jitter=lambda low, high: high,
                    asked_wait=lambda failure: failure.wait if isinstance(failure, Busy) else None, longest_asked_wait=cap)
    except Transient as failure:
        got = failure.reason
    assert (got, clock.pauses) == (outcome, pauses)
