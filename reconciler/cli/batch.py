"""`reconciler batch run DEPLOYMENT`: one run of a batch deployment now, by hand, on this site.
It scores with the version the site has active (validated when it was deployed) and the batch
spec the agent last applied, takes the same run lock as the agent's schedule (concurrencyPolicy
Forbid) and writes the same ledger, so a file is never scored twice with the same model bytes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reconciler import reasons
from reconciler.errors import Transient


def add_subcommands(commands: argparse._SubParsersAction) -> None:
    batch = commands.add_parser("batch", help="act on a batch deployment of this site")
    actions = batch.add_subparsers(metavar="ACTION")
    run = actions.add_parser("run", help="run a batch deployment now, over the input files not yet done")
    run.add_argument("deployment")
    run.add_argument("--config", type=Path, required=True, metavar="SITE_YAML",
                     help="the site's site.yaml: its state directory and batch input/output directories")
    run.set_defaults(handler=cmd_batch_run)


def cmd_batch_run(args: argparse.Namespace) -> int:
    from reconciler.agent.config import load_site_config
    from reconciler.agent.statedir import StateDir
    from reconciler.batch.scheduler import ActiveModels, BatchScheduler

    config = load_site_config(args.config, {})
    state_dir = StateDir(config.state)
    scheduler = BatchScheduler(config.state, config.batch, ActiveModels(config.state),
                               lambda: state_dir.load(config.site))
    summary = scheduler.run_now(args.deployment, "manual")
    if summary is None:
        raise Transient(reasons.BatchRunInProgress, f"{args.deployment}: a run is in progress (concurrencyPolicy "
                                              "Forbid); try again when it has finished")
    print(json.dumps(summary.model_dump(mode="json"), indent=2))
    return 1 if summary.state == "Failed" else 0
