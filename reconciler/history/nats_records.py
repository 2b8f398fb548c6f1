"""The NATS records bucket read back: every site's newest record there,
checked against the Site documents' keys as a gate checks them (sites with ``nats:`` and ``audit:
off`` leave no status ref in Git, so this is the only place their state is read back from)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.manifests.fleet import FleetRepo
    from reconciler.settings import NatsSettings
    from reconciler.status.record import StatusRecord
    from reconciler.status.signed import Ignored

__all__ = ["records_from_nats"]


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

