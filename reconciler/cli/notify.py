"""``reconciler notify --commit SHA``: tell every site of a new fleet commit at once, over NATS. The
fleet's CI runs it after a push; the sites' channels see the fleet bucket's ``commit`` key change
and reconcile now, so their Git poll can be minutes apart (README "NATS channel")."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from pydantic import ValidationError

from reconciler.errors import UsageError

_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def add_subcommands(commands: argparse._SubParsersAction) -> None:
    notify = commands.add_parser("notify", help="announce a new fleet commit to every site over NATS")
    notify.add_argument("--commit", required=True, help="the full commit id the fleet branch now points at")
    notify.add_argument("--server", action="append", required=True, metavar="URL",
                        help="nats://HOST:PORT or tls://HOST:PORT (repeat for a cluster)")
    notify.add_argument("--fleet-bucket", default=None, help="the key-value bucket the sites watch (default: reconciler-fleet)")
    notify.add_argument("--credentials-file", type=Path, help="a NATS .creds file (JWT and NKey seed)")
    notify.add_argument("--token-env", help="the NAME of the environment variable holding a NATS token")
    notify.add_argument("--nkey-seed", type=Path, help="a file holding an NKey seed")
    notify.add_argument("--tls-ca", type=Path, help="PEM bundle that signs the server's certificate")
    notify.add_argument("--timeout", type=float, default=None, help="seconds per request (default: 5)")
    notify.set_defaults(handler=cmd_notify)


def cmd_notify(args: argparse.Namespace) -> int:
    from reconciler.settings import NatsSettings
    from reconciler.status.nats_channel import NatsChannel

    commit = args.commit.strip().lower()
    if not _COMMIT.fullmatch(commit):
        raise UsageError(f"--commit must be a full commit id (40 or 64 hex digits), not {args.commit!r}")
    given = {"servers": args.server, "fleet_bucket": args.fleet_bucket, "credentials_file": args.credentials_file,
             "token_env": args.token_env, "nkey_seed": args.nkey_seed, "tls_ca": args.tls_ca, "timeout": args.timeout}
    try:
        settings = NatsSettings.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        said = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
                         for e in exc.errors(include_url=False))
        raise UsageError(f"invalid NATS settings: {said}") from None
    channel = NatsChannel(settings)
    try:
        channel.put_commit(commit)
    finally:
        channel.close()
    print(f"announced {commit} on {settings.fleet_bucket}/commit")
    return 0
