"""Simulated sites polling a head beacon, for the fleet simulator's poll phase: each runs the
agent's own poll (agent.headpoll.BeaconedHeads over ingest.beacon.Beacon, with
GitSource.remote_head behind it), one kept-alive connection per site, on the simulator's thread
pool (the poll code is synchronous).

A phase measures sites as they stand after running for a while, not a fleet starting at once:
before it, each site's poll is set to the head git gave (``known``) with its next backstop git
poll at a random point of one backstop (sites started at different times), and the beacon is
asked once (its ETag, and the connection). So in the measured window a site's poll is a 304
and, at the real backstop (10 min by default), a git ls-remote: N / backstop of them a second."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from reconciler.agent.headpoll import BeaconedHeads
from reconciler.gitdoor.source import GitSource
from reconciler.ingest.beacon import Beacon
from reconciler.settings import FetchLimits

__all__ = ["BeaconSites"]


class _Site:
    def __init__(self, beacon_url: str, git_url: str, scratch: Path, backstop: float, counter: BeaconSites):
        self.source = GitSource(git_url, "main", scratch)
        self.counter = counter
        self.heads = BeaconedHeads(Beacon(beacon_url, FetchLimits()), self._git_head, backstop)
        self.lock = threading.Lock()  # a poll that runs late must not overlap the site's next one

    def _git_head(self) -> str:
        self.counter.count_git()
        return self.source.remote_head()

    def poll(self) -> str:
        with self.lock:
            return self.heads.remote_head()


class BeaconSites:
    """``sites`` simulated sites of one fleet; ``poll(site)`` is one site's poll."""

    def __init__(self, beacon_url: str, git_url: str, scratch: Path, sites: int, backstop: float):
        self.git_polls = 0
        self._lock = threading.Lock()
        self.backstop = backstop
        self.sites = [_Site(beacon_url, git_url, scratch / "unused", backstop, self) for _ in range(sites)]

    def count_git(self) -> None:
        with self._lock:
            self.git_polls += 1

    def prime(self, head: str, seed: int) -> None:
        """Every site as if it had run for a while (see the module's docstring)."""
        rng = random.Random(seed)
        now = time.monotonic()
        for site in self.sites:
            site.heads.known, site.heads.git_due = head, now + rng.uniform(0, self.backstop)
            site.heads.beacon.poll()

    def poll(self, site: int) -> str:
        return self.sites[site].poll()

    def close(self) -> None:
        for site in self.sites:
            site.heads.close()
            site.source.close()
