"""The shard summaries read back for the operator's commands: each gated deployment's reports,
read and admitted exactly as the agent's gates read them (entries checked against the keys of the
fleet commit's Site documents), so ``plan --base/--head``, a trial run and ``status`` decide and
show what the gates would. From Git, the roll-ups of a ``summaryRepo`` (``--summary-repo``,
status/summary_refs.py ``RollUps.reports``); from NATS, the summaries bucket (``--nats-server``
or a site's ``nats:``, status/nats_summaries.py ``NatsSummaries.reports``). A summary holds each
site's report on one deployment and nothing else of its record (no served version, inventory,
drift details or history)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler import reasons
from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.summary import decode
from reconciler.errors import NeedsOperator
from reconciler.gitdoor.source import GitSource
from reconciler.manifests.fleet import FleetRepo
from reconciler.status.gitref import StatusRefs
from reconciler.status.signed import Ignored, RecordCheck
from reconciler.status.summary_refs import ROLLUP_REF_PREFIX, RollUps, rollup_ref

if TYPE_CHECKING:
    from reconciler.settings import NatsSettings

__all__ = ["SummaryRead", "read_nats_summaries", "read_summaries"]


@dataclass(frozen=True)
class SummaryRead:
    location: str
    reports: FleetReports  # one entry per deployment read: empty when its summary holds no report
    no_rollup: tuple[str, ...]  # deployments read whose summary does not exist yet
    unparsed: tuple[str, ...]  # shard files of the roll-ups that do not parse, and why: skipped
    ignored: tuple[Ignored, ...]  # entries whose signature the Site documents do not admit
    held_as: tuple[str, str] = ("roll-up", "roll-ups")  # what a deployment's summary is called there

    @property
    def notes(self) -> list[str]:
        """What was read, and what of it the summaries could not say, for the user."""
        read, (one, many) = sorted(self.reports.by_deployment), self.held_as
        notes = [f"read the {many} of {', '.join(read)} from {self.location}" if read else
                 f"no deployment with a rollout: nothing to read from {self.location}"]
        notes += [f"{self.location} holds no {one} of {name} yet (no site has summarised a report on it): "
                  "its sites count as not reported" for name in self.no_rollup]
        notes += [f"skipped {file}, as the gates skip it: its shard's sites count as not reported"
                  for file in self.unparsed]
        return notes


def read_summaries(location: str, branch: str, fleet: FleetRepo, deployments: Iterable[str]) -> SummaryRead:
    """The reports of ``deployments`` in the roll-ups at ``location`` that ``fleet``'s Site
    documents admit. A repository that holds no roll-up of any deployment is refused: it is not
    where the sites summarise (a wrong URL), or none wrote yet, and either way it says nothing."""
    names = sorted(set(deployments))
    check = RecordCheck.of_fleet(fleet)
    url = str(Path(location).resolve()) if Path(location).is_dir() else location
    with tempfile.TemporaryDirectory(prefix="reconciler-summaries-") as scratch, \
            GitSource(url, branch, Path(scratch)) as source:
        summaries = RollUps(source)
        reports = {name: summaries.reports(name, check) for name in names}
        refs = StatusRefs(source)  # the same cache: what the reads found there
        tips = {name: refs.cached_tip(rollup_ref(name)) for name in names}
        no_rollup = tuple(name for name, tip in tips.items() if tip is None)
        unparsed = tuple(f"{name}'s roll-up file {file} ({why})" for name, tip in tips.items() if tip is not None
                         for file, why in _unparsed(refs.files_at(tip), name))
        if names and len(no_rollup) == len(names):
            refs.fetch_refs(f"+{ROLLUP_REF_PREFIX}*:{ROLLUP_REF_PREFIX}*")
            if not refs.local_tips(ROLLUP_REF_PREFIX):
                raise NeedsOperator(reasons.SummaryRepoEmpty, (
                    f"{location} holds no roll-up of any deployment (refs/reconciler/rollup/*): pass the "
                    "summaryRepo the sites write to, or read the status records without --summary-repo"))
    return SummaryRead(location, FleetReports(reports), no_rollup, unparsed, tuple(check.ignored))


def read_nats_summaries(settings: NatsSettings, fleet: FleetRepo, deployments: Iterable[str]) -> SummaryRead:
    """The reports of ``deployments`` in the NATS summaries bucket that ``fleet``'s Site documents
    admit. A bucket that does not exist or holds no summary at all is refused, as an empty
    summaryRepo is; a server that does not answer is Transient (``StatusChannelUnreachable``). A
    shard that does not parse is skipped, as the gates skip it, with a warning on stderr."""
    from reconciler.status.nats_channel import NatsChannel
    from reconciler.status.nats_summaries import NatsSummaries

    names, check, bucket = sorted(set(deployments)), RecordCheck.of_fleet(fleet), settings.summaries_bucket
    location = f"NATS bucket {bucket} at {', '.join(settings.servers)}"
    channel = NatsChannel(settings, create_buckets=False)  # it only reads: a mistyped bucket is not made
    try:
        if not channel.has_bucket(bucket):
            raise _no_summaries(location, "does not exist")
        summaries = NatsSummaries(channel)
        reports = {name: summaries.reports(name, check) for name in names}
        no_summary = tuple(name for name in names if not summaries.shards(name))
        if names and len(no_summary) == len(names) and not channel.run(_holds_any):
            raise _no_summaries(location, "holds no summary of any deployment")
    finally:
        channel.close()
    return SummaryRead(location, FleetReports(reports), no_summary, (), tuple(check.ignored), ("summary", "summaries"))


async def _holds_any(js, kv) -> bool:
    return (await kv.status()).values > 0


def _no_summaries(location: str, what: str) -> NeedsOperator:
    return NeedsOperator(reasons.SummaryBucketEmpty, (
        f"{location} {what}: pass the servers and summaries bucket of the sites' nats: settings "
        "(--nats-server, --summaries-bucket; site.yaml nats.summariesBucket)"))


def _unparsed(files: Mapping[str, bytes], deployment: str) -> Iterator[tuple[str, str]]:
    """The roll-up's shard files that do not parse, and why: the gates skip them (one broken
    writer must not blind them), and so does this read, but it says so."""
    for file, data in sorted(files.items()):
        try:
            decode(data, deployment)
        except ValueError as error:
            yield file, str(error)
