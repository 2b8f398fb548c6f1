"""The site's status channel over NATS (status/nats_channel.py): every record to the records
bucket, other sites' records from its watched view, and the audit trail still in Git: the site's
status ref gets a commit only when something an auditor asks about changed (a state, a version,
the applied commit), not for a new message or a canary's next weight. Without write access to any
repo (``audit: off``) the bucket's history is the only trail."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from reconciler.agent.ports import FleetSource
from reconciler.errors import ReconcilerError
from reconciler.status.forge import CommitStatus
from reconciler.status.gitref import StatusRefs
from reconciler.status.nats_channel import NatsChannel
from reconciler.status.record import StatusRecord
from reconciler.status.signed import RecordCheck, StatusKeyring, Verdicts

log = logging.getLogger("reconciler.agent")


def audit_view(record: StatusRecord) -> tuple:
    """What the audit trail records: the site's state and applied commit, each deployment's state,
    versions, wave and rollout, and the reason a failure names."""
    return (record.state, record.appliedCommit, record.stale,
            tuple(sorted((name, d.state, d.version, d.activeVersion, d.wave, d.rollout, d.failureKind,
                          d.reason if d.state in ("failure", "error", "aborted") else None)
                         for name, d in record.deployments.items())))


class NatsStatusChannel:
    mirrors_waves = False  # no forge beside it: wave statuses would go nowhere

    def __init__(self, nats: NatsChannel, audit: StatusRefs | None):
        self.nats, self.audit = nats, audit
        self.audited: tuple | None = None  # audit_view of the newest record in Git
        self.verdicts = Verdicts()  # each record verified once, each ignored one logged once

    def read_own(self, site: str) -> StatusRecord | None:
        return self.nats.record(site)

    def read_fleet(self, source: FleetSource, commit: str, keyring: StatusKeyring,
                   gated: Mapping[str, int]) -> dict[str, StatusRecord]:
        """Every site's newest record in the bucket that ``keyring`` admits, checked as the Git
        channel checks its refs: signed by a key the site's Site document enrolls, or unsigned
        from a site that enrolls none (unless the fleet requires signed status)."""
        check = RecordCheck(keyring, earlier=self.verdicts)
        return {site: received.record for site, received in self.nats.received().items()
                if check.admit(site, received.id, received.stored, received.signature)}

    def publish(self, record: StatusRecord, waves: list[CommitStatus], gated: Mapping[str, int]) -> None:
        """To the bucket (its failure fails the reconcile, as a refused push does), then to Git if
        the audit view changed; Git being out of reach only delays the audit to the next change."""
        self.nats.put_record(record)
        view = audit_view(record)
        if self.audit is None or view == self.audited:
            return
        try:
            self.audit.write(record)
            self.audited = view
        except ReconcilerError as error:
            log.warning("%s: audit record not written to Git: %s", record.site, error)

    def close(self) -> None:
        self.nats.close()
        if self.audit is not None:
            self.audit.close()
