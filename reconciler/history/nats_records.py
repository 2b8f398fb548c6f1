"""The NATS records bucket read back: every site's newest record there,
checked against the Site documents' keys as a gate checks them (sites with ``nats:`` and ``audit:
off`` leave no status ref in Git, so this is the only place their state is read back from)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler import reasons
from reconciler.errors import NeedsOperator

if TYPE_CHECKING:
    from reconciler.manifests.fleet import FleetRepo
    from reconciler.settings import NatsSettings
    from reconciler.status.record import StatusRecord
    from reconciler.status.signed import Ignored

__all__ = ["records_from_nats"]


def records_from_nats(settings: NatsSettings, fleet: FleetRepo) -> tuple[dict[str, StatusRecord], list[Ignored]]:
    """Every site's newest record in the records bucket that ``fleet``'s Site documents admit, as
    a site's gate reads them, and the records ignored. A bucket that does not exist is refused
    (``RecordsBucketMissing``), not made: a mistyped name would otherwise read as a silent fleet."""
    from reconciler.status.nats_channel import NatsChannel
    from reconciler.status.signed import RecordCheck, StatusKeyring

    check = RecordCheck(StatusKeyring.of_fleet(fleet))
    channel = NatsChannel(settings, create_buckets=False)  # it only reads: a mistyped bucket is not made
    try:
        if not channel.has_bucket(settings.records_bucket):
            raise NeedsOperator(reasons.RecordsBucketMissing, (
                f"NATS bucket {settings.records_bucket} at {', '.join(settings.servers)} does not exist: pass the "
                "servers and records bucket of the sites' nats: settings (--nats-server, --records-bucket; "
                "site.yaml nats.recordsBucket)"))
        received = channel.received()
    finally:
        channel.close()
    records = {site: got.record for site, got in sorted(received.items())
               if check.admit(site, got.id, got.stored, got.signature)}
    return records, check.ignored

