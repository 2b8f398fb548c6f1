"""`reconciler run --once --dry-run`: what this site would do now, from its config, its state
directory and the fleet's status records, or the summaries of the deployments that gate it when
its gates read summaries (the roll-ups of a ``summaryRepo``, the summaries bucket of ``nats:``), so
the wave gates are the agent's, and nothing written anywhere: no
status record, no forge status, no state change, no download, no lock. A trial run on a site
that is not set up yet (no trust key, say) can therefore never tell the rest of the fleet
anything."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from reconciler.agent.statedir import StateDir
from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.plan import Plan, plan_site, rollout_of
from reconciler.delivery.summary import gated_shards
from reconciler.history.timeline import open_fleet
from reconciler.manifests.loader import load_tree
from reconciler.settings import SiteConfig
from reconciler.status.record import StatusRecord


def dry_run(config: SiteConfig, as_json: bool = False) -> int:
    """Prints the plan; 1 when the site could not do what the fleet asks (an ``error`` action)."""
    from reconciler.cli.exits import EXIT_FINDING, EXIT_OK
    from reconciler.cli.plan import render_plan_text
    from reconciler.cli.summaries import read_reports, summary_reader

    with open_fleet(config.repo, config.branch) as opened:
        loaded = load_tree(opened.source.files(opened.head))
        if loaded.errors:
            for finding in loaded.errors:
                print(finding.render(), file=sys.stderr)
            return EXIT_FINDING
        rollouts = any(rollout_of(loaded.repo, d) for d in loaded.repo.deployments.values())
        in_fleet_repo = config.status_repo is None and config.nats is None and config.summary_repo is None
        records: dict[str, StatusRecord] | FleetReports = opened.status().latest if rollouts and in_fleet_repo else {}
        head = opened.head
    now = datetime.now(UTC)
    summaries = summary_reader(config.summary_repo, config.branch, config.nats)
    if rollouts and summaries is not None:
        records = read_reports(summaries, loaded.repo, gated_shards(loaded.repo, config.site, now))
    elif rollouts and config.status_repo is not None:
        with open_fleet(config.status_repo, config.branch) as status:
            records = status.status().latest
    if not (config.trust_keys or config.trust_identities):
        print(f"{config.site}: no trust keys or identities configured: every artifact signature would be refused "
              "(NoTrustedKeys, a site condition)", file=sys.stderr)
    state = StateDir(config.state).load(config.site)  # read only: no lock, no write
    plan = plan_site(loaded.repo, config.site, state, now, head, records)
    print(json.dumps(plan.to_json(), indent=2) if as_json else render_plan_text(plan) + "\n(dry run: nothing written)")
    return EXIT_FINDING if _has_error(plan) else EXIT_OK


def _has_error(plan: Plan) -> bool:
    return any(action.kind == "error" for action in plan.actions)
