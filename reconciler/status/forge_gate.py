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
  posts when its state changes, that is when it entered the state on this commit. It can be later
  than the site's own ``since``, never earlier: a status reposted with a new description (or on
  a new commit) restarts it, which can only delay a gate, never open it early.
- ``model``, ``previousVersion``, ``weights`` are not on the forge; ``reason`` is ``ForgeStatus``
  and ``message`` what the status tells people.

What the forge does not show counts as silence, as a missing status ref would: a status without
readable pairs (a wave's combined status, one posted by an older agent, one whose pairs a length
limit dropped) and a site that has not yet posted on this commit (it reads the commit a poll
later). Anyone who may post commit statuses on the repository can speak for a site, as anyone who
may push can write its status ref: the forge's permissions are the trust boundary."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime

from reconciler.manifests.types import DNS_LABEL
from reconciler.status.forge import CONTEXT_PREFIX, ForgeStatuses, ShownStatus, split_description
from reconciler.status.record import WORST_FIRST, DeploymentStatus, StatusRecord

log = logging.getLogger(__name__)

FORGE_REASON = "ForgeStatus"
_NAME = re.compile(DNS_LABEL)


def fleet_status_from_forge(forge: ForgeStatuses, commit_sha: str, agent_version: str = "forge"
                            ) -> dict[str, StatusRecord]:
    """Every site that posted on ``commit_sha``, as a status record. The forge being unreachable
    raises as ``read_statuses`` does (Transient); a status it cannot read is skipped."""
    return records_from_statuses(forge.read_statuses(commit_sha), commit_sha, agent_version)


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
        reason=FORGE_REASON,
        message=human,
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
