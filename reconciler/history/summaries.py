"""The shard summaries' roll-ups read back for the operator's commands (``--summary-repo``): each
gated deployment's reports, read and admitted exactly as the agent's gates read them
(status/summary_refs.py ``SummaryRefs.reports``, entries checked against the keys of the fleet
commit's Site documents), so ``plan --base/--head``, a trial run and ``status`` decide and show
what the gates would. A roll-up holds each site's report on one deployment and nothing else of
its record (no served version, inventory, drift details or history)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler import reasons
from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.summary import decode
from reconciler.errors import NeedsOperator
from reconciler.gitdoor.source import GitSource
from reconciler.manifests.fleet import FleetRepo
from reconciler.status.gitref import StatusRefs
from reconciler.status.signed import Ignored, RecordCheck
from reconciler.status.summary_refs import ROLLUP_REF_PREFIX, SummaryRefs, rollup_ref

__all__ = ["SummaryRead", "read_summaries"]


@dataclass(frozen=True)
class SummaryRead:
    location: str
    reports: FleetReports  # one entry per deployment read: empty when its roll-up holds no report
    no_rollup: tuple[str, ...]  # deployments read whose roll-up does not exist yet
    unparsed: tuple[str, ...]  # shard files of the roll-ups that do not parse, and why: skipped
    ignored: tuple[Ignored, ...]  # entries whose signature the Site documents do not admit

    @property
    def notes(self) -> list[str]:
        """What was read, and what of it the summaries could not say, for the user."""
        read = sorted(self.reports.by_deployment)
        notes = [f"read the roll-ups of {', '.join(read)} from {self.location}" if read else
                 f"no deployment with a rollout: nothing to read from {self.location}"]
        notes += [f"{self.location} holds no roll-up of {name} yet (no site has summarised a report on it): "
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
        summaries = SummaryRefs(source)
        reports = {name: summaries.reports(name, check) for name in names}
        refs = StatusRefs(source)  # the same cache: what the reads found there
        tips = {name: refs.cached_tip(rollup_ref(name)) for name in names}
        no_rollup = tuple(name for name, tip in tips.items() if tip is None)
        unparsed = tuple(f"{name}'s roll-up file {file} ({why})" for name, tip in tips.items() if tip is not None
                         for file, why in _unparsed(refs.files_at(tip), name))
        if names and len(no_rollup) == len(names):
            refs.fetch_refs(f"+{ROLLUP_REF_PREFIX}*:{ROLLUP_REF_PREFIX}*")
            if not refs.local_refs(ROLLUP_REF_PREFIX):
                raise NeedsOperator(reasons.SummaryRepoEmpty, (
                    f"{location} holds no roll-up of any deployment (refs/reconciler/rollup/*): pass the "
                    "summaryRepo the sites write to, or read the status records without --summary-repo"))
    return SummaryRead(location, FleetReports(reports), no_rollup, unparsed, tuple(check.ignored))


def _unparsed(files: Mapping[str, bytes], deployment: str) -> Iterator[tuple[str, str]]:
    """The roll-up's shard files that do not parse, and why: the gates skip them (one broken
    writer must not blind them), and so does this read, but it says so."""
    for file, data in sorted(files.items()):
        try:
            decode(data, deployment)
        except ValueError as error:
            yield file, str(error)
