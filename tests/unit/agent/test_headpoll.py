"""The head beacon's decision table (agent/headpoll.py) with an injected clock: when a poll costs
a git process and when it does not, and that no beacon answer can keep git's head from the site."""

from __future__ import annotations

import logging

import pytest

from reconciler import reasons
from reconciler.agent.headpoll import BeaconedHeads
from reconciler.errors import Transient

A, B, C = "a" * 40, "b" * 40, "c" * 40
BACKSTOP = 600.0
FAILED = Transient(reasons.HeadBeaconFailed, "head beacon http://beacon/fleet.head: HTTP 500")


class FakeBeacon:
    url = "http://beacon/fleet.head"

    def __init__(self):
        self.answers: list[object] = []  # what the next polls return (a commit, None for 304) or raise
        self.polls = 0
        self.closed = False

    def poll(self) -> str | None:
        self.polls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


class FakeGit:
    def __init__(self, head: str):
        self.head = head
        self.calls = 0
        self.error: Exception | None = None

    def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.head


@pytest.fixture
def poller():
    beacon, git, now = FakeBeacon(), FakeGit(A), [0.0]
    heads = BeaconedHeads(beacon, git, BACKSTOP, clock=lambda: now[0], site="s1")
    return heads, beacon, git, now


# (beacon's answer after a first poll that asked git for A, git's head then, seconds later,
#  the head returned, git processes run by that poll, beacon polls by that poll)
TABLE = [
    ("304: nothing changed", None, A, 30, A, 0, 1),
    ("names the head git gave last", A, A, 30, A, 0, 1),
    ("names a new commit, git agrees", B, B, 30, B, 1, 1),
    ("names a commit git does not have (lies)", C, A, 30, A, 1, 1),
    ("fails", FAILED, B, 30, B, 1, 1),
    ("304, but the backstop is due", None, B, BACKSTOP, B, 1, 0),
    ("304 just before the backstop", None, B, BACKSTOP - 1, A, 0, 1),
]


@pytest.mark.parametrize(("case", "answer", "git_head", "later", "head", "git_calls", "beacon_polls"), TABLE,
                         ids=[row[0] for row in TABLE])
def test_decision_table(poller, case, answer, git_head, later, head, git_calls, beacon_polls):
    heads, beacon, git, now = poller
    assert heads.remote_head() == A and (git.calls, beacon.polls) == (1, 0)  # the first poll asks git alone
    beacon.answers.append(answer)
    git.head, now[0] = git_head, later
    assert heads.remote_head() == head
    assert (git.calls - 1, beacon.polls) == (git_calls, beacon_polls)


def test_a_beacon_stuck_on_an_old_commit_delays_a_push_by_the_backstop_at_most(poller):
    heads, beacon, git, now = poller
    heads.remote_head()
    git.head = B  # pushed; the beacon never moves
    seen = []
    for tick in range(1, 25):
        now[0] = tick * 30.0
        beacon.answers.append(None)
        seen.append(heads.remote_head())
    assert seen.index(B) == 19  # at 600 s: the backstop's git poll
    assert git.calls == 2


def test_a_git_failure_after_the_beacon_moved_asks_git_again_next_poll(poller):
    heads, beacon, git, now = poller
    heads.remote_head()
    git.head, git.error = B, Transient(reasons.SourceUnreachable, "git ls-remote: connection refused")
    beacon.answers.append(B)
    now[0] = 30
    with pytest.raises(Transient):
        heads.remote_head()
    git.error = None
    now[0] = 60  # the beacon would answer 304 now: its ETag moved with the answer that named B
    assert heads.remote_head() == B
    assert beacon.polls == 1


def test_a_failing_beacon_is_logged_once_and_its_recovery_once(poller, caplog):
    heads, beacon, git, now = poller
    heads.remote_head()
    beacon.answers += [FAILED, FAILED, FAILED, None, FAILED]
    with caplog.at_level(logging.INFO, logger="reconciler.agent"):
        for tick in range(1, 6):
            now[0] = tick * 30.0
            assert heads.remote_head() == A
    failures = [r for r in caplog.records if getattr(r, "reason", None) == reasons.HeadBeaconFailed]
    assert len(failures) == 2  # the first streak once, the second once
    assert sum("answers again" in r.getMessage() for r in caplog.records) == 1
    assert git.calls == 1 + 4  # every failing poll ran git


def test_a_stale_beacon_is_logged_once_per_commit_it_names(poller, caplog):
    heads, beacon, git, now = poller
    heads.remote_head()
    beacon.answers += [C, C, C]  # no validators: it answers 200 every time
    with caplog.at_level(logging.WARNING, logger="reconciler.agent"):
        for tick in range(1, 4):
            now[0] = tick * 30.0
            assert heads.remote_head() == A
    assert sum(getattr(r, "reason", None) == reasons.HeadBeaconStale for r in caplog.records) == 1


def test_close_closes_the_beacon(poller):
    heads, beacon, _git, _now = poller
    heads.close()
    assert beacon.closed
