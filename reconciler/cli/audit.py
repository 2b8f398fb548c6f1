"""``reconciler audit`` and ``reconciler report``: history from Git (reconciler.history.timeline),
shown as text, JSON or CSV (reconciler.history.report), and the HTML page (reconciler.history.html_report).

Exit status: 0; 1 when a change ``audit`` lists has a bad signature (the commit was altered after it
was signed); 2 for bad usage or a repository or trust root that cannot be read."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from reconciler.cli.exits import EXIT_FINDING, EXIT_OK
from reconciler.cli.nats_options import add_nats_reading, nats_settings
from reconciler.errors import ReconcilerError, UsageError
from reconciler.history.html_report import write_report
from reconciler.history.nats_records import records_from_nats
from reconciler.history.report import at_csv, at_text, trail_csv, trail_text
from reconciler.history.timeline import audit_at, audit_trail, parse_time
from reconciler.settings import CommitPolicy

__all__ = ["add_subcommands", "trust_policy"]


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """``reconciler audit`` and ``reconciler report``."""
    audit = subparsers.add_parser("audit", help="history from Git: deployment changes, site timelines, --at TIME")
    _repo_arguments(audit)
    audit.add_argument("--site", help="only this site's timeline (or row, with --at)")
    audit.add_argument("--deployment", help="only this deployment")
    audit.add_argument("--at", metavar="TIME", help="what every site served at TIME "
                       "(ISO 8601 or 'YYYY-MM-DD HH:MM'; UTC unless an offset is given)")
    audit.add_argument("--format", choices=["text", "json", "csv"], default="text")
    audit.set_defaults(handler=cmd_audit)

    report = subparsers.add_parser("report", help="a self-contained HTML page of the fleet and its history")
    report.add_argument("--html", required=True, type=Path, metavar="DIR", help="write DIR/index.html")
    _repo_arguments(report)
    add_nats_reading(report, "the matrix and rollout progress")
    report.set_defaults(handler=cmd_report)


def _repo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", default=".", help="fleet repo: a path or a URL (status refs live there)")
    parser.add_argument("--branch", default="main", help="the fleet branch (default main)")
    parser.add_argument("--allowed-signers", type=Path,
                        help="SSH allowed-signers file: the signers whose commit signatures count as good")
    parser.add_argument("--gpg-keyring", type=Path,
                        help="OpenPGP public keys whose commit signatures count as good")


def trust_policy(allowed_signers: Path | None, gpg_keyring: Path | None) -> CommitPolicy | None:
    if allowed_signers is None and gpg_keyring is None:
        return None
    return CommitPolicy(ssh_allowed_signers=allowed_signers, gpg_keyring=gpg_keyring)


def cmd_audit(args: argparse.Namespace) -> int:
    at = parse_time(args.at) if args.at else None
    try:
        if at is not None:
            view = audit_at(args.repo, args.branch, at, args.site, args.deployment)
            _print(json.dumps(view.to_json(), indent=2) if args.format == "json"
                   else at_csv(view) if args.format == "csv" else at_text(view))
            return EXIT_OK
        trail = audit_trail(args.repo, args.branch, trust_policy(args.allowed_signers, args.gpg_keyring),
                            args.site, args.deployment)
    except ReconcilerError as error:  # an unreadable repository or trust root: the environment, not a finding
        raise UsageError(str(error)) from error
    _print(json.dumps(trail.to_json(), indent=2) if args.format == "json"
           else trail_csv(trail) if args.format == "csv" else trail_text(trail))
    return EXIT_FINDING if any(c.signature and c.signature.state == "bad" for c in trail.changes) else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    nats = nats_settings(args, "nats-", records_bucket=args.records_bucket) if args.nats_servers else None
    try:
        path = write_report(args.html, args.repo, args.branch, trust_policy(args.allowed_signers, args.gpg_keyring),
                            datetime.now(UTC), (lambda fleet: records_from_nats(nats, fleet)) if nats else None)
    except ReconcilerError as error:
        raise UsageError(str(error)) from error
    print(f"wrote {path}")
    return EXIT_OK


def _print(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


# --- text and CSV -------------------------------------------------------------------------------
