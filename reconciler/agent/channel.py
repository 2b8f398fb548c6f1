"""The site's status channel: records as Git refs (status/gitref.py), mirrored as a forge's commit
statuses when the site has a forge (status/forge_client.py); with ``gateSource: forge`` the forge
is the only channel, and other sites' records are read from its statuses. With a ``summaryRepo``
the site also writes its entry in each gating deployment's summary beside its record and gathers
its shard into the deployment's roll-up (status/summary_refs.py), and gates read the roll-ups
instead of every site's record.

Other sites' records reach the gates only once checked against the keys their Site documents
enroll (status/signed.py); forge statuses carry no signatures, so a fleet that requires signed
status gets none from the forge."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from reconciler import reasons
from reconciler.agent.ports import FleetSource
from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.gates import SiteReport, site_report
from reconciler.delivery.summary import says_the_same
from reconciler.errors import ReconcilerError
from reconciler.status.forge import CommitStatus, statuses_for_record
from reconciler.status.forge_client import ForgeStatuses
from reconciler.status.forge_gate import LOOKBACK, ForgeFleetStatus
from reconciler.status.gitref import StatusRefs
from reconciler.status.record import StatusRecord
from reconciler.status.signed import RecordCheck, StatusKeyring, Verdicts
from reconciler.status.summary_refs import SummaryRefs

if TYPE_CHECKING:  # nats-py is imported by NATS mode alone
    from reconciler.status.nats_summaries import NatsSummaries

log = logging.getLogger("reconciler.agent")


class Summariser:
    """This site's entry in its shard of each gated deployment's summary (status/summary_refs.py in
    Git, status/nats_summaries.py in NATS), written only when the report it carries changed."""

    def __init__(self, summaries: SummaryRefs | NatsSummaries):
        self.summaries = summaries
        self.summarised: dict[str, SiteReport | None] = {}  # what this site's entry in each summary says

    def __call__(self, record: StatusRecord, gated: Mapping[str, int]) -> None:
        """After the record, so a summary never says what no record said. A write that fails
        raises: the reconcile fails and the next one, finding the record written, folds again."""
        for name, shard in sorted(self.changed(record, gated).items()):
            self.summaries.publish(record, name, shard)
            self.said(record, [name])

    def changed(self, record: StatusRecord, gated: Mapping[str, int]) -> dict[str, int]:
        """The ``gated`` deployments (name: the site's shard) on which ``record``'s entry would say
        something this site's entry does not say yet."""
        return {name: shard for name, shard in gated.items()
                if name not in self.summarised or not says_the_same(self.summarised[name], site_report(record, name))}

    def said(self, record: StatusRecord, names: Iterable[str]) -> None:
        for name in names:
            self.summarised[name] = site_report(record, name)


class GitStatusChannel:
    def __init__(self, refs: StatusRefs, forge: ForgeStatuses | None = None, *, by_forge: bool = False,
                 target_url: str | None = None, summaries: SummaryRefs | None = None):
        self.refs = refs
        self.summaries = summaries
        self.summarise = Summariser(summaries) if summaries is not None else None
        self.forge = forge
        self.by_forge = by_forge  # an agent that may not push to the repo
        self.target_url = target_url
        self.forge_fleet = ForgeFleetStatus(forge) if forge is not None else None
        self.verdicts = Verdicts()  # each record verified once, each ignored one logged once

    @property
    def mirrors_waves(self) -> bool:
        return self.forge is not None

    def read_own(self, site: str) -> StatusRecord | None:
        return None if self.by_forge else self.refs.read_own(site)

    def read_fleet(self, source: FleetSource, commit: str, keyring: StatusKeyring,
                   gated: Mapping[str, int]) -> dict[str, StatusRecord] | FleetReports:
        """Every site's newest record that ``keyring`` admits: from Git refs, or from the forge's
        statuses on this commit and, for how long each has held, the commits before it. With
        summaries: the reports of the ``gated`` deployments' summary entries that ``keyring`` admits."""
        if self.summaries is not None:
            check = RecordCheck(keyring, earlier=self.verdicts)
            return FleetReports({name: self.summaries.reports(name, check) for name in gated})
        if not self.by_forge:
            return self.refs.read_all(RecordCheck(keyring, earlier=self.verdicts))
        records = self.forge_fleet.read(source.first_parents(commit, LOOKBACK))
        if keyring.require_signed and records:
            log.warning("the fleet requires signed status, and forge statuses carry no signatures: "
                        "the statuses of %d sites count as not reported", len(records),
                        extra={"reason": reasons.StatusRecordIgnored})
            return {}
        return records

    def publish(self, record: StatusRecord, waves: list[CommitStatus], gated: Mapping[str, int]) -> None:
        """The record to Git (with, in the same push, its entry on each ``gated`` deployment whose
        report changed, then those shards gathered into their roll-ups), then one forge status
        per deployment and ``waves``. The forge mirrors Git for people: its being down never
        fails a reconcile."""
        if self.summaries is not None:  # never with a forge (settings refuse both)
            changed = self.summarise.changed(record, gated)
            written = self.summaries.write(record, changed)
            self.summarise.said(record, changed)
        else:
            written = True if self.by_forge else self.refs.write(record)
        if not written or self.forge is None or not record.observedCommit:
            return
        try:
            self.forge.publish(record.observedCommit, statuses_for_record(record, self.target_url) + waves)
        except ReconcilerError as error:
            log.warning("%s: forge statuses not posted: %s", record.site, error)

    def flush_audit(self, now: datetime, final: bool = False) -> datetime | None:
        return None  # every record is pushed as it is written

    def close(self) -> None:
        self.refs.close()
        if self.summaries is not None:
            self.summaries.close()
        if self.forge is not None:
            self.forge.close()
