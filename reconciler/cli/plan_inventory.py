"""``reconciler plan --site``'s warnings where the site's own inventory (its newest status record)
contradicts the platform of an artifact the plan picks for it (delivery/platform_fit.py)."""

from __future__ import annotations

import sys

from git import GitCommandError

from reconciler.delivery.plan import Plan
from reconciler.delivery.platform_fit import platform_warnings
from reconciler.errors import ReconcilerError, UsageError
from reconciler.history.timeline import open_fleet
from reconciler.status.record import StatusRecord


def warn_against_inventory(repo: str, branch: str, site: str, plan: Plan) -> None:
    record = newest_record(repo, branch, site)
    if record is None or record.inventory is None:
        return
    targets = [action.target for action in plan.actions if action.target is not None] + list(plan.converged)
    for warning in platform_warnings(site, targets, record.inventory):
        print(f"warning: {warning}", file=sys.stderr)


def newest_record(repo: str, branch: str, site: str) -> StatusRecord | None:
    """None where there is nothing to read: a folder that is no git repository, no such branch,
    a site that never reported. The plan stands without the check."""
    try:
        with open_fleet(repo, branch) as opened:
            return opened.status([site]).latest.get(site)
    except (ReconcilerError, UsageError, GitCommandError):
        return None
