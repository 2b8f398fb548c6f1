"""What the agent needs of the outside world, as protocols: the fleet repository it reads and the
status channel it reports to. agent/wiring.py plugs in the real doors (gitdoor.source.GitSource,
agent.channel.GitStatusChannel); devtools/fakes.py holds in-memory ones for unit tests, as httpx's
``MockTransport`` stands in for the network."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from reconciler.delivery.fleet_reports import FleetReports
from reconciler.ingest.fetch import RepoRoot
from reconciler.manifests.loader import RepoFile
from reconciler.status.forge import CommitStatus
from reconciler.status.record import StatusRecord
from reconciler.status.signed import StatusKeyring


class FleetSource(Protocol):
    """The fleet repository as a site reads it (gitdoor.source.GitSource). A commit policy
    (trust.commitpolicy) reads signatures and so needs the git source itself."""

    cache_dir: Path  # where the source keeps its copy of the repository, named in errors
    def remote_head(self) -> str: ...
    def fetch(self, sha: str | None = None) -> str: ...
    def is_ancestor(self, old: str, new: str) -> bool: ...
    def first_parents(self, commit: str, limit: int) -> list[str]: ...
    def files(self, sha: str) -> list[RepoFile]: ...
    def tree(self, sha: str) -> RepoRoot: ...
    def close(self) -> None: ...


class StatusChannel(Protocol):
    """Where this site's records go and where the fleet's come from (agent.channel.GitStatusChannel)."""

    @property
    def mirrors_waves(self) -> bool: ...  # publish posts wave statuses too: worth computing them
    def read_own(self, site: str) -> StatusRecord | None: ...
    # Only the records whose signatures ``keyring`` (the commit's Site documents) admits; ``gated``:
    # each deployment that targets this site with a rollout, and the site's shard of its summaries
    # (a channel that keeps summaries reads and writes those, the others every site's record).
    def read_fleet(self, source: FleetSource, commit: str, keyring: StatusKeyring,
                   gated: Mapping[str, int]) -> dict[str, StatusRecord] | FleetReports: ...
    def publish(self, record: StatusRecord, waves: list[CommitStatus], gated: Mapping[str, int]) -> None: ...
    def close(self) -> None: ...
