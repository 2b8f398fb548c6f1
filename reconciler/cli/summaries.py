"""Where ``plan --base/--head``, ``status`` and a trial run read each gated deployment's reports
from the sites' shard summaries, as the gates read them (history/summaries.py), instead of every
site's status record: the roll-ups of a summary repository (``--summary-repo``, a site's
``summaryRepo``) or the NATS summaries bucket (``plan --nats-server``, a site's ``nats:``); and
``status``'s view of them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from reconciler.cli.exits import EXIT_OK
from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.delivery.fleet_reports import FleetReports
    from reconciler.history.summaries import SummaryRead
    from reconciler.manifests.fleet import FleetRepo
    from reconciler.settings import NatsSettings

    SummaryReader = Callable[[FleetRepo, Iterable[str]], SummaryRead]  # a fleet commit, the deployments to read

__all__ = ["add_summary_reading", "read_reports", "say_what_was_read", "status_from_summaries", "summary_reader"]

_HELP = ("read each gated deployment's reports from the roll-ups in this repository (site.yaml summaryRepo: "
         "a URL or path, reached as the fleet repo is), as the sites' gates read them, instead of every site's "
         "status record")


def add_summary_reading(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument("--summary-repo", metavar="URL", help=_HELP + more)


def summary_reader(summary_repo: str | None, branch: str, nats: NatsSettings | None) -> SummaryReader | None:
    """Reads the roll-ups of ``summary_repo``'s ``branch``, else the summaries bucket of ``nats``;
    None when neither is given (the commands read the status records)."""
    from reconciler.history.summaries import read_nats_summaries, read_summaries

    if summary_repo is not None:
        return lambda fleet, deployments: read_summaries(summary_repo, branch, fleet, deployments)
    if nats is not None:
        return lambda fleet, deployments: read_nats_summaries(nats, fleet, deployments)
    return None


def read_reports(reader: SummaryReader, fleet: FleetRepo, deployments: Iterable[str]) -> FleetReports:
    """The reports ``reader`` finds for ``deployments``, after saying on stderr what it read."""
    read = reader(fleet, deployments)
    say_what_was_read(read)
    return read.reports


def say_what_was_read(read: SummaryRead) -> None:
    """On stderr, beside the answer: which roll-ups were read, which were missing, and the entries
    ignored (a forged or unsigned entry of an enrolled site)."""
    for note in read.notes:
        print(f"reconciler: {note}", file=sys.stderr)
    for ignored in read.ignored:
        print(f"reconciler: ignored the summary entry of site {ignored.site}: {ignored.why}", file=sys.stderr)


def status_from_summaries(args: argparse.Namespace) -> int:
    """``reconciler status --summary-repo``: the matrix of each site's report on each deployment
    with a rollout (status/report_matrix.py); the views that need whole records are refused."""
    from reconciler.delivery.plan import rollout_of, targeted_sites
    from reconciler.history.summaries import read_summaries
    from reconciler.history.timeline import open_fleet
    from reconciler.manifests.loader import load_tree
    from reconciler.status import report_matrix

    needs_records = [flag for flag, given in (("--drift", args.drift), ("--evaluation", args.evaluation),
                                              ("--inventory", args.inventory), ("--nats-server", args.nats_servers))
                     if given]
    if needs_records:
        raise UsageError(f"{', '.join(needs_records)} read the status records, which --summary-repo does not: "
                         "leave one or the other out")
    now = datetime.now(UTC)
    with open_fleet(args.repo, args.branch) as opened:
        fleet = load_tree(opened.source.files(opened.head)).repo
    targeted = {name: set(targeted_sites(fleet, deployment, now)) for name, deployment in fleet.deployments.items()
                if rollout_of(fleet, deployment) is not None}
    read = read_summaries(args.summary_repo, args.branch, fleet, targeted)
    say_what_was_read(read)
    matrix = report_matrix.build_report_matrix(read.reports, fleet.sites, targeted)
    if args.format == "json":
        print(json.dumps(matrix.to_json() | {"ignored": [i.to_json() for i in read.ignored]}, indent=2))
    else:
        print(report_matrix.render_markdown(matrix) if args.format == "markdown" else report_matrix.render_text(matrix))
    return EXIT_OK
