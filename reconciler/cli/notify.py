"""``reconciler notify --commit SHA``: tell every site of a new fleet commit at once, over NATS. The
fleet's CI runs it after a push; the sites' channels see the fleet bucket's ``commit`` key change
and reconcile now, so their Git poll can be minutes apart (README "NATS channel")."""

from __future__ import annotations

import argparse
import re

from reconciler.cli.nats_options import add_nats_access, nats_settings
from reconciler.errors import UsageError

_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def add_subcommands(commands: argparse._SubParsersAction) -> None:
    notify = commands.add_parser("notify", help="announce a new fleet commit to every site over NATS")
    notify.add_argument("--commit", required=True, help="the full commit id the fleet branch now points at")
    notify.add_argument("--server", action="append", required=True, metavar="URL", dest="servers",
                        help="nats://HOST:PORT or tls://HOST:PORT (repeat for a cluster)")
    notify.add_argument("--fleet-bucket", default=None, help="the key-value bucket the sites watch (default: reconciler-fleet)")
    add_nats_access(notify)
    notify.set_defaults(handler=cmd_notify)


def cmd_notify(args: argparse.Namespace) -> int:
    from reconciler.status.nats_channel import NatsChannel

    commit = args.commit.strip().lower()
    if not _COMMIT.fullmatch(commit):
        raise UsageError(f"--commit must be a full commit id (40 or 64 hex digits), not {args.commit!r}")
    settings = nats_settings(args, fleet_bucket=args.fleet_bucket)
    channel = NatsChannel(settings)
    try:
        channel.put_commit(commit)
    finally:
        channel.close()
    print(f"announced {commit} on {settings.fleet_bucket}/commit")
    return 0
