"""Gates from the forge: the other sites' status records rebuilt from the commit statuses they
posted on a fleet commit, for agents that may not push to the fleet repo (so read no status refs).

Every site posts, on the fleet commit its record observed, one status per deployment
(``reconciler/<deployment>/<site>``) whose description ends with the pairs a gate reads
(reconciler.status.forge: ``state=… rollout=… version=… active=… wave=…``). This module turns the
statuses of one commit into one StatusRecord per site, so that ``gates.site_report`` and
``gates.decide_gate`` work on them unchanged:

- ``state`` is ours exactly, from the pairs (the forge's own names lose progressing, aborted and,
  on GitLab, error). A site that aborted is seen aborted, so ``RolloutAborted`` propagates; were
  only the forge's names known, it would be seen failed, which still counts for the abort rule.
- ``since`` of each deployment is the forge's instant of the newest change of that status, and
  ``writtenAt`` of the site the latest of them: no clock but the forge's is trusted. As a site
  posts when its state changes, that is when it entered the state on this commit. A site posts
  again on every fleet commit it reads, so on its own that instant would restart with every
  commit, even one that changes nothing for the rollout, and a busy repository would keep a wave
  from ever baking. ``carried_back`` follows the status back through the earlier first-parent
  commits on which the site showed the same state of the same rollout and version without a
  change, and takes the forge's instant of the first of them. It can be later than the site's own
  ``since``, never earlier: a change the forge recorded ends the run, which can only delay a gate,
  never open it early.
- ``model``, ``previousVersion``, ``weights`` are not on the forge; ``reason`` is ``ForgeStatus``
  (a failure's or error's own, with its ``failureKind``, from the pairs) and ``message`` what the
  status tells people.

What the forge does not show counts as silence, as a missing status ref would: a status without
readable pairs (a wave's combined status, one posted by an older agent, one whose pairs a length
limit dropped) and a site that has not yet posted on this commit (it reads the commit a poll
later). Anyone who may post commit statuses on the repository can speak for a site, as anyone who
may push can write its status ref: the forge's permissions are the trust boundary."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from reconciler import reasons
from reconciler.manifests.types import DNS_LABEL
from reconciler.status.forge import CONTEXT_PREFIX, ShownStatus, split_description
from reconciler.status.forge_client import ForgeStatuses
from reconciler.status.record import WORST_FIRST, DeploymentStatus, StatusRecord

log = logging.getLogger(__name__)

FORGE_REASON = reasons.ForgeStatus
_NAME = re.compile(DNS_LABEL)


LOOKBACK = 50  # first-parent commits a status is followed back through, at most
_CACHED = 4 * LOOKBACK
_CLOCK_SKEW = timedelta(minutes=5)  # between the forge's clock and ours


class ForgeFleetStatus:
    """The fleet's records as the forge shows them on the newest fleet commit, with each status's
    ``since`` carried back through the commits before it.

    The newest commit is read on every call; an earlier one is read again only if the copy kept
    of it may miss a post. A site posts on the commits it reads in order, so everything it posted
    on earlier commits came before its status on the newest one: a copy read after the newest
    status on the newest commit (plus the clocks' skew) misses nothing a run could pass through."""

    def __init__(self, forge: ForgeStatuses, agent_version: str = "forge",
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self._forge = forge
        self._agent_version = agent_version
        self._now = now
        self._earlier: dict[str, tuple[datetime, dict[str, ShownStatus]]] = {}  # sha -> (read at, statuses)

    def read(self, commits: Sequence[str]) -> dict[str, StatusRecord]:
        """``commits``: the newest fleet commit, then its first-parent ancestors, newest first. The
        forge being unreachable raises as ``read_statuses`` does (Transient); a status it cannot
        read is skipped."""
        newest, earlier = commits[0], commits[1:LOOKBACK + 1]
        statuses = self._forge.read_statuses(newest)
        if statuses:
            complete_after = max(shown.at for shown in statuses.values()) + _CLOCK_SKEW
            statuses = carried_back(statuses, (self._statuses_of(sha, complete_after) for sha in earlier))
        return records_from_statuses(statuses, newest, self._agent_version)

    def _statuses_of(self, commit_sha: str, complete_after: datetime) -> Mapping[str, ShownStatus]:
        kept = self._earlier.pop(commit_sha, None)
        if kept is None or kept[0] < complete_after:
            kept = (self._now(), self._forge.read_statuses(commit_sha))
        self._earlier[commit_sha] = kept  # re-inserted: the least recently used go first
        if len(self._earlier) > _CACHED:
            del self._earlier[next(iter(self._earlier))]
        return kept[1]


def carried_back(newest: Mapping[str, ShownStatus], earlier: Iterable[Mapping[str, ShownStatus]]
                 ) -> dict[str, ShownStatus]:
    """PURE: ``newest`` with each status's ``at`` moved back to the first of the earlier commits
    (newest first) on which the site showed it unchanged. A commit without the status (the site
    never read it) is passed over; one showing another state, rollout or version ends the run, and
    so does one on which the status changed (only its newest change is visible, so whatever came
    before it on that commit is unknown). Stops reading ``earlier`` once every run has ended."""
    carried = dict(newest)
    following = {context: _identity(shown) for context, shown in newest.items()
                 if shown.changes == 1 and _identity(shown) is not None}
    if not following:
        return carried
    for statuses in earlier:
        for context, identity in list(following.items()):
            shown = statuses.get(context)
            if shown is None:
                continue
            if _identity(shown) != identity:
                del following[context]
                continue
            carried[context] = carried[context].model_copy(update={"at": min(carried[context].at, shown.at)})
            if shown.changes != 1:
                del following[context]
        if not following:
            break
    return carried


def _identity(shown: ShownStatus) -> tuple[str, str, str | None] | None:
    """What must stay the same for a status to count as one run: state, rollout and version."""
    fields = split_description(shown.description)[1]
    rollout = fields.get("rollout")
    return None if rollout is None else (shown.state, rollout, fields.get("version"))


def records_from_statuses(statuses: Mapping[str, ShownStatus], commit_sha: str, agent_version: str = "forge"
                          ) -> dict[str, StatusRecord]:
    """PURE: the statuses of one commit (``read_statuses``) as one record per site."""
    deployments: dict[str, dict[str, DeploymentStatus]] = {}
    for context, shown in sorted(statuses.items()):
        read = _deployment_status(context, shown, commit_sha)
        if read is not None:
            deployment, site, status = read
            deployments.setdefault(site, {})[deployment] = status
    return {site: _record(site, of_site, commit_sha, agent_version) for site, of_site in deployments.items()}


def _deployment_status(context: str, shown: ShownStatus, commit_sha: str
                       ) -> tuple[str, str, DeploymentStatus] | None:
    names = context.removeprefix(CONTEXT_PREFIX).split("/")
    if not context.startswith(CONTEXT_PREFIX) or len(names) != 2 or not all(_NAME.fullmatch(n) for n in names):
        log.warning("forge status %s on %s: not reconciler/<deployment>/<site>; ignored", context, commit_sha)
        return None
    deployment, site = names
    human, fields = split_description(shown.description)
    if not fields:
        if not site.startswith("wave-"):  # a wave's combined status carries no pairs by design
            log.warning("forge status %s on %s: no state=… pairs in %r; ignored", context, commit_sha,
                        shown.description)
        return None
    status = DeploymentStatus(
        model="",
        state=shown.state,
        version=fields.get("version"),
        activeVersion=fields.get("active"),
        wave=fields.get("wave"),
        rollout=fields.get("rollout"),
        reason=fields.get("reason", FORGE_REASON),
        message=human,
        failureKind=fields.get("kind") if fields.get("kind") in ("version", "site") else None,
        since=shown.at,
    )
    return deployment, site, status


def _record(site: str, deployments: dict[str, DeploymentStatus], commit_sha: str, agent_version: str
            ) -> StatusRecord:
    written: datetime = max(status.since for status in deployments.values())
    return StatusRecord(
        site=site,
        observedCommit=commit_sha,
        state=min((status.state for status in deployments.values()), key=WORST_FIRST.index),
        reason=FORGE_REASON,
        deployments=deployments,
        agentVersion=agent_version,
        writtenAt=written,
    )
