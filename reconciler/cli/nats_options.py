"""The options ``reconciler status``, ``report``, ``plan`` and ``notify`` share to reach a NATS server."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.settings import NatsSettings

__all__ = ["add_nats_access", "add_nats_reading", "nats_settings"]


def add_nats_reading(parser: argparse.ArgumentParser, what: str, bucket: str = "records") -> None:
    """``--nats-server`` (read ``what`` from the ``bucket`` bucket, records or summaries, instead of
    Git), that bucket's name as ``--<bucket>-bucket``, and the access options, as ``--nats-*``."""
    from reconciler.settings import NatsSettings

    default = NatsSettings.model_fields[f"{bucket}_bucket"].default
    parser.add_argument("--nats-server", action="append", metavar="URL", dest="nats_servers",
                        help=f"read {what} from the NATS {bucket} bucket, not Git (sites with nats:)")
    parser.add_argument(f"--{bucket}-bucket", default=None, help=f"with --nats-server (default: {default})")
    add_nats_access(parser, "nats-")


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
