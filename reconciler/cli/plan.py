"""`reconciler plan`: what one site would do at a revision (``--site``), or what a change does to the
fleet's rollouts (``--base``/``--head``, for a pull request), reading the other sites' reports from
the status records, a summary repository or NATS summaries."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from reconciler.cli.exits import EXIT_FINDING, EXIT_OK
from reconciler.errors import UsageError

__all__ = ["add_subcommands", "cmd_plan", "render_plan_text"]


def add_subcommands(commands: argparse._SubParsersAction) -> None:
    from reconciler.cli.artifact_check import add_artifact_arguments
    from reconciler.cli.nats_options import add_nats_reading
    from reconciler.cli.summaries import add_summary_reading

    plan = commands.add_parser("plan", help="what one site would do at a revision, or a change's fleet impact")
    plan.add_argument("--site", help="plan for this site")
    plan.add_argument("--base", help="with --head: the fleet impact of a change (for a pull request)")
    plan.add_argument("--head")
    plan.add_argument("--repo", default=".", help="fleet repo: a path (working tree unless --rev) or a URL")
    plan.add_argument("--rev", help="branch, tag or commit (default: the working tree, or main for a URL)")
    plan.add_argument("--state", type=Path, help="the site's state directory (default: a fresh site)")
    plan.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    add_artifact_arguments(plan)  # for --base/--head: the artifacts of the versions that change
    add_summary_reading(plan, " (with --base/--head)")
    add_nats_reading(plan, "each gated deployment's reports (with --base/--head), as the gates read them,",
                     bucket="summaries")
    plan.set_defaults(handler=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from reconciler.agent.statedir import StateDir
    from reconciler.cli.plan_inventory import warn_against_inventory
    from reconciler.delivery.model import SiteState
    from reconciler.delivery.plan import plan_site
    from reconciler.gitdoor.source import open_revision
    from reconciler.manifests.loader import load_directory, load_tree

    now = datetime.now(UTC)
    if args.base or args.head:
        return _plan_impact(args, now)
    if not args.site:
        raise UsageError("plan needs --site NAME, or --base REV --head REV")
    if args.summary_repo or args.nats_servers:
        raise UsageError(f"{'--summary-repo' if args.summary_repo else '--nats-server'} goes with --base/--head "
                         "(a site's plan here reads no other site)")
    local = Path(args.repo)
    if local.is_dir() and args.rev is None:
        loaded, commit = load_directory(local), None
    else:
        with open_revision(args.repo, args.rev or "main") as (commit, files):
            loaded = load_tree(files)
    if loaded.errors:
        for finding in loaded.errors:
            print(finding.render(), file=sys.stderr)
        return EXIT_FINDING
    state = StateDir(args.state).load(args.site) if args.state else SiteState(site=args.site)
    plan = plan_site(loaded.repo, args.site, state, now, commit)
    warn_against_inventory(args.repo, args.rev or "main", args.site, plan)
    if args.format == "json":
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print(render_plan_text(plan))  # a site's plan is short: markdown is the same text
    return EXIT_FINDING if any(a.kind == "error" for a in plan.actions) else EXIT_OK


def _plan_impact(args: argparse.Namespace, now: datetime) -> int:
    from reconciler.cli.artifact_check import ArtifactOptions
    from reconciler.cli.change_check import check_change
    from reconciler.cli.nats_options import nats_settings
    from reconciler.cli.summaries import summary_reader
    from reconciler.delivery.impact import render_markdown, render_text

    if not (args.base and args.head):
        raise UsageError("the fleet impact needs both --base REV and --head REV")
    if args.summary_repo and args.nats_servers:
        raise UsageError("--summary-repo and --nats-server both say where the summaries are: give one")
    nats = nats_settings(args, "nats-", summaries_bucket=args.summaries_bucket) if args.nats_servers else None
    impact = check_change(args.repo, args.base, args.head, ArtifactOptions.from_args(args), now,
                          summary_reader(args.summary_repo, "main", nats))
    if args.format == "json":
        print(json.dumps(impact.to_json(), indent=2))
    else:
        print(render_markdown(impact) if args.format == "markdown" else render_text(impact))
    return EXIT_FINDING if impact.blocked else EXIT_OK


def render_plan_text(plan) -> str:
    at = f" at {plan.commit[:12]}" if plan.commit else " (working tree)"
    lines = [f"site {plan.site}{at}: {len(plan.actions)} change(s), {len(plan.converged)} converged"]
    for action in plan.actions:
        to = action.target.version if action.target else "-"
        wave = f" wave={action.target.wave}" if action.target and action.target.wave else ""
        lines.append(f"  {action.kind:<8} {action.deployment:<28} {action.from_version or '-':>8} -> {to:<8}"
                     f"{wave}  {action.reason}: {action.message}")
    for target in plan.converged:
        wave = f" wave={target.wave}" if target.wave else ""
        lines.append(f"  {'ok':<8} {target.deployment:<28} {target.version:>8}{wave}")
    return "\n".join(lines)
