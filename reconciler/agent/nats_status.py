"""The site's status channel over NATS (status/nats_channel.py): every record to the records
bucket, this site's entry to its shard of each gated deployment's summary and the gates from
those summaries (status/nats_summaries.py), and the audit trail still in Git: the site's status
ref gets a commit only when something an auditor asks about changed (a state, a version, the
applied commit), not for a new message or a canary's next weight. Without write access to any
repo (``audit: off``) the bucket's history is the only trail.

Audit commits are batched: each is made at once in the site's cache (status/gitref.py ``queue``),
and the queue goes in one push after a random share of ``auditSpread`` from the first commit it
holds, and at shutdown; one found queued at start (a restart) goes within a spread too. So a wave
whose sites move together does not push together, and every change is still its own commit."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from reconciler.agent.channel import Summariser
from reconciler.agent.ports import FleetSource
from reconciler.delivery.fleet_reports import FleetReports
from reconciler.errors import ReconcilerError
from reconciler.gitdoor.git import GitError
from reconciler.status.forge import CommitStatus
from reconciler.status.gitref import StatusRefs
from reconciler.status.nats_channel import NatsChannel
from reconciler.status.nats_summaries import NatsSummaries
from reconciler.status.record import StatusRecord
from reconciler.status.signed import RecordCheck, StatusKeyring, Verdicts

log = logging.getLogger("reconciler.agent")

_RETRY_AUDIT = 1.0  # seconds at least before a push that failed is tried again


def audit_view(record: StatusRecord) -> tuple:
    """What the audit trail records: the site's state and applied commit, each deployment's state,
    versions, wave and rollout, and the reason a failure names."""
    return (record.state, record.appliedCommit, record.stale,
            tuple(sorted((name, d.state, d.version, d.activeVersion, d.wave, d.rollout, d.failureKind,
                          d.reason if d.state in ("failure", "error", "aborted") else None)
                         for name, d in record.deployments.items())))


class NatsStatusChannel:
    mirrors_waves = False  # no forge beside it: wave statuses would go nowhere

    def __init__(self, nats: NatsChannel, summaries: NatsSummaries, audit: StatusRefs | None,
                 audit_spread: float = 0.0, rng: random.Random | None = None):
        self.nats, self.summaries, self.audit = nats, summaries, audit
        self.summarise = Summariser(summaries)
        self.audit_spread = audit_spread  # seconds
        self.rng = rng or random.Random()
        self.audited: tuple | None = None  # audit_view of the newest record committed for Git
        self.audit_due: datetime | None = None  # when the queued audit commits are pushed
        self.verdicts = Verdicts()  # each record verified once, each ignored one logged once

    def read_own(self, site: str) -> StatusRecord | None:
        return self.nats.record(site)

    def read_fleet(self, source: FleetSource, commit: str, keyring: StatusKeyring,
                   gated: Mapping[str, int]) -> FleetReports:
        """The reports of the ``gated`` deployments' summary entries that ``keyring`` admits,
        checked as the Git channel checks them: signed by a key the site's Site document enrolls,
        or unsigned from a site that enrolls none (unless the fleet requires signed status)."""
        check = RecordCheck(keyring, earlier=self.verdicts)
        return FleetReports({name: self.summaries.reports(name, check) for name in gated})

    def publish(self, record: StatusRecord, waves: list[CommitStatus], gated: Mapping[str, int]) -> None:
        """To the bucket and the summaries (their failure fails the reconcile, as a refused push
        does), then queued for Git if the audit view changed; a queue that cannot be written
        (the cache) only delays the audit to the next change."""
        self.nats.put_record(record)
        self.summarise(record, gated)
        view = audit_view(record)
        if self.audit is None or view == self.audited:
            return
        try:
            self.audit.queue(record)
            self.audited = view
        except (ReconcilerError, GitError) as error:
            log.warning("%s: audit record not committed for Git: %s", record.site, error)
            return
        if self.audit_due is None:
            self.audit_due = record.writtenAt + self._spread()

    def flush_audit(self, now: datetime, final: bool = False) -> datetime | None:
        """Push the queued audit commits once due (at once when ``final``); when the next push is
        due, None when nothing waits. A push that fails is tried again within a spread."""
        if self.audit is None or self.nats.site is None:
            return None
        if self.audit_due is None:
            if not self.audit.queued(self.nats.site):
                return None
            self.audit_due = now + self._spread()  # queued before a restart
        if not final and now < self.audit_due:
            return self.audit_due
        try:
            pushed = self.audit.push_queued(self.nats.site)
        except (ReconcilerError, GitError) as error:
            log.warning("%s: audit commits not pushed to Git (they wait in the cache): %s", self.nats.site, error)
            self.audit_due = now + max(self._spread(), timedelta(seconds=_RETRY_AUDIT))
            return self.audit_due
        log.debug("%s: %d audit commit(s) pushed", self.nats.site, pushed)
        self.audit_due = None
        return None

    def _spread(self) -> timedelta:
        return timedelta(seconds=self.rng.uniform(0, self.audit_spread))

    def close(self) -> None:
        try:
            self.flush_audit(datetime.now(UTC), final=True)
        finally:
            self.nats.close()
            if self.audit is not None:
                self.audit.close()
