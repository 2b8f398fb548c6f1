"""``reconciler notify --commit SHA``: tell every site of a new fleet commit at once, over NATS. The
fleet's CI runs it after a push; the sites' channels see the fleet bucket's ``commit`` key change
and reconcile now, so their Git poll can be minutes apart (README "NATS channel"). And the NATS
options other commands share: ``reconciler status --nats-server`` reads the records bucket."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.manifests.fleet import FleetRepo
    from reconciler.settings import NatsSettings
    from reconciler.status.record import StatusRecord
    from reconciler.status.signed import Ignored

_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def add_subcommands(commands: argparse._SubParsersAction) -> None:
    notify = commands.add_parser("notify", help="announce a new fleet commit to every site over NATS")
    notify.add_argument("--commit", required=True, help="the full commit id the fleet branch now points at")
    notify.add_argument("--server", action="append", required=True, metavar="URL", dest="servers",
                        help="nats://HOST:PORT or tls://HOST:PORT (repeat for a cluster)")
    notify.add_argument("--fleet-bucket", default=None, help="the key-value bucket the sites watch (default: reconciler-fleet)")
    add_nats_access(notify)
    notify.set_defaults(handler=cmd_notify)


def add_nats_access(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """How to reach and authenticate to the NATS server (``prefix``: before each option's name,
    ``nats-`` gives ``--nats-token-env`` and ``args.nats_token_env``)."""
    parser.add_argument(f"--{prefix}credentials-file", type=Path, help="a NATS .creds file (JWT and NKey seed)")
    parser.add_argument(f"--{prefix}token-env", help="the NAME of the environment variable holding a NATS token")
    parser.add_argument(f"--{prefix}nkey-seed", type=Path, help="a file holding an NKey seed")
    parser.add_argument(f"--{prefix}tls-ca", type=Path, help="PEM bundle that signs the server's certificate")
    parser.add_argument(f"--{prefix}timeout", type=float, default=None, help="seconds per request (default: 5)")


def nats_settings(args: argparse.Namespace, prefix: str = "", **more: object) -> NatsSettings:
    """The NatsSettings the options of ``add_nats_access`` (and ``more``) give; UsageError otherwise."""
    from reconciler.settings import NatsSettings

    names = ("servers", "credentials_file", "token_env", "nkey_seed", "tls_ca", "timeout")
    given = {name: getattr(args, prefix.replace("-", "_") + name) for name in names} | more
    try:
        return NatsSettings.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        said = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
                         for e in exc.errors(include_url=False))
        raise UsageError(f"invalid NATS settings: {said}") from None


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


def records_from_nats(settings: NatsSettings, fleet: FleetRepo) -> tuple[dict[str, StatusRecord], list[Ignored]]:
    """Every site's newest record in the records bucket that ``fleet``'s Site documents admit, as
    a site's gate reads them, and the records ignored."""
    from reconciler.status.nats_channel import NatsChannel
    from reconciler.status.signed import RecordCheck, StatusKeyring

    check = RecordCheck(StatusKeyring.of_fleet(fleet))
    channel = NatsChannel(settings)
    try:
        received = channel.received()
    finally:
        channel.close()
    records = {site: got.record for site, got in sorted(received.items())
               if check.admit(site, got.id, got.stored, got.signature)}
    return records, check.ignored

