"""Retrying with backoff, one policy for every door: before attempt n+1 a wait drawn uniformly from
[0, backoff * 2**(n-1)] (exponential backoff with full jitter, so sites that met the same outage
do not come back in step), never past the deadline, and never sooner than the other side asked. The clock and the waiting belong to the
caller's ``Deadline``, so a test runs without sleeping; which failures another attempt may cure
is the caller's to say (``retried``)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Deadline(Protocol):
    def left(self) -> float:
        """Seconds left; at or below zero, no attempt starts."""
        ...

    def pause(self, seconds: float) -> None:
        """Wait (and raise if the work was stopped meanwhile)."""
        ...

    def exceeded(self, last: Exception | None) -> Exception:
        """The error to raise when the deadline passed, ``last`` the failure before it."""
        ...


def exponential(base: float, attempt: int, cap: float = math.inf) -> float:
    """``base`` doubled for every attempt after the first (``attempt`` counts from 1), at most ``cap``."""
    return min(cap, base * 2 ** (attempt - 1))


def _never_asked(failure: Exception) -> float | None:
    return None


def retry(attempt: Callable[[], T], *, attempts: int, backoff: float, retried: Callable[[Exception], bool],
          deadline: Deadline, jitter: Callable[[float, float], float] = random.uniform,
          asked_wait: Callable[[Exception], float | None] = _never_asked, longest_asked_wait: float = math.inf) -> T:
    """``attempt()``'s result, trying up to ``attempts`` times in all while its failures are
    ``retried`` and the deadline has time left. A failure not retried is raised at once; when the
    attempts run out, the last failure; when the deadline passes, ``deadline.exceeded(last)``.

    A failure may carry the wait the other side asked for (``asked_wait``, e.g. HTTP's
    ``Retry-After``, at most ``longest_asked_wait``): the next attempt waits at least that long,
    and when that is past the deadline, the deadline is said to be exceeded at once rather than
    slept through."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    last: Exception | None = None
    for n in range(attempts):
        if n:
            assert last is not None
            wait = jitter(0, exponential(backoff, n))
            asked = asked_wait(last)
            if asked is not None:
                asked = min(asked, longest_asked_wait)
                if asked >= deadline.left():
                    raise deadline.exceeded(last) from last
                wait = max(wait, asked)
            deadline.pause(min(wait, max(0.0, deadline.left())))
        if deadline.left() <= 0:
            raise deadline.exceeded(last) from last
        try:
            return attempt()
        except Exception as failure:
            if not retried(failure):
                raise
            last = failure
    assert last is not None
    raise last
