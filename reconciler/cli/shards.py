"""`reconciler shards`: each gated deployment's summary shards with their waves and sites, so an
operator can give each shard's sites one status repository (README, "Scale"): a site's roll-up
write carries the entries of its shard-mates that write to the same status repository."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from reconciler.cli.exits import EXIT_OK
from reconciler.errors import UsageError

__all__ = ["add_subcommands"]


def add_subcommands(commands: argparse._SubParsersAction) -> None:
    shards = commands.add_parser("shards", help="each gated deployment's summary shards: their waves and sites")
    shards.add_argument("--repo", default=".", help="fleet repo: a path (working tree unless --rev) or a URL")
    shards.add_argument("--rev", help="branch, tag or commit (default: the working tree, or main for a URL)")
    shards.add_argument("--deployment", help="this deployment alone (default: every one with a rollout)")
    shards.add_argument("--format", choices=["text", "json"], default="text")
    shards.set_defaults(handler=cmd_shards)


def cmd_shards(args: argparse.Namespace) -> int:
    from reconciler.delivery.summary import deployment_shards
    from reconciler.gitdoor.source import open_revision
    from reconciler.manifests.loader import load_directory, load_tree

    local = Path(args.repo)
    if local.is_dir() and args.rev is None:
        repo = load_directory(local).repo
    else:
        with open_revision(args.repo, args.rev or "main") as (_, files):
            repo = load_tree(files).repo
    if args.deployment is not None and args.deployment not in repo.deployments:
        raise UsageError(f"no deployment {args.deployment!r} in the fleet repo "
                         f"(there are: {', '.join(sorted(repo.deployments)) or 'none'})")
    now = datetime.now(UTC)
    names = [args.deployment] if args.deployment else sorted(repo.deployments)
    layout = {name: deployment_shards(repo, name, now) for name in names}
    if args.format == "json":
        print(json.dumps({name: [{"shard": s.number, "wave": s.wave, "sites": list(s.sites)} for s in found]
                          for name, found in layout.items() if found or args.deployment}, indent=2))
        return EXIT_OK
    for name, found in layout.items():
        if not found:
            if args.deployment:
                print(f"{name}: no rollout, so no summaries (its sites are not gated)")
            continue
        print(f"{name}:")
        for shard in found:
            count = f"{len(shard.sites)} site" + ("s" if len(shard.sites) != 1 else "")
            print(f"  shard {shard.number:04d}  wave {shard.wave or '(none)'}  {count}: {', '.join(shard.sites)}")
    return EXIT_OK
