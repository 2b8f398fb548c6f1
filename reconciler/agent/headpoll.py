"""The branch's head for a site with a head beacon (site.yaml ``headBeacon``): each poll asks the
beacon (reconciler.ingest.beacon), and runs ``git ls-remote`` only when the answer may be news.

    situation                                          what the poll does
    first poll, or ``backstop`` since git last asked   git ls-remote (the beacon is not asked)
    git failed last time                               git ls-remote again
    the beacon fails (any HeadBeaconFailed)            git ls-remote; the failure logged once
    the beacon answers 304 Not Modified                the head git gave last: no git process
    the beacon names the head git gave last            the same: no git process
    the beacon names another commit                    git ls-remote: git's answer is the head

So the beacon is only ever a hint: the head is always what Git said, and the fetched commit goes
through the same verification. A beacon that lies or stops moving costs at most ``backstop`` of
delay (git asked when it names another commit, which a lying one does at once); one that fails
costs each poll a git process, as if there were none."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from reconciler import reasons
from reconciler.errors import ReconcilerError

__all__ = ["Beacon", "BeaconedHeads"]

log = logging.getLogger("reconciler.agent")


class Beacon(Protocol):
    """reconciler.ingest.beacon.Beacon: the commit it names, or None for 304 Not Modified."""

    url: str
    def poll(self) -> str | None: ...
    def close(self) -> None: ...


class BeaconedHeads:
    """``remote_head()`` as the agent calls it (agent.ports.HeadSource); ``git_head``: the git
    poll (GitSource.remote_head), ``clock``: monotonic seconds."""

    def __init__(self, beacon: Beacon, git_head: Callable[[], str], backstop: float,
                 clock: Callable[[], float] = time.monotonic, site: str = ""):
        self.beacon = beacon
        self.git_head = git_head
        self.backstop = backstop
        self.clock = clock
        self.site = site
        self.known: str | None = None  # what git said last
        self.git_due = 0.0  # when git must be asked, whatever the beacon says
        self.failure: str | None = None  # the beacon failure logged last, until it answers again
        self.stale: str | None = None  # the commit a beacon named against git's, logged once

    def remote_head(self) -> str:
        now = self.clock()
        if self.known is None or now >= self.git_due:
            return self._ask_git(now, None)
        try:
            named = self.beacon.poll()
        except ReconcilerError as error:
            self._failed(error)
            return self._ask_git(now, None)
        if self.failure is not None:
            log.info("%s: head beacon %s answers again", self.site, self.beacon.url)
            self.failure = None
        if named is None or named == self.known:
            return self.known
        return self._ask_git(now, named)

    def close(self) -> None:
        self.beacon.close()

    def _ask_git(self, now: float, named: str | None) -> str:
        try:
            head = self.git_head()
        except Exception:
            self.git_due = now  # a move the beacon told of must not wait for the backstop
            raise
        self.known, self.git_due = head, now + self.backstop
        if named is not None and named != head and named != self.stale:
            log.warning("%s: head beacon %s names %s, git ls-remote %s: git's counts", self.site,
                        self.beacon.url, named[:12], head[:12], extra={"reason": reasons.HeadBeaconStale})
            self.stale = named
        return head

    def _failed(self, error: ReconcilerError) -> None:
        if error.message != self.failure:
            log.warning("%s: %s; polling git instead until it answers", self.site, error.message,
                        extra={"reason": error.reason})
            self.failure = error.message
