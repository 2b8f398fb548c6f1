"""PURE: what a site's plan reads of the other sites: per deployment, each site's newest
``SiteReport``. It comes from every site's full status record (Git refs, the forge, NATS) or, when
the fleet keeps shard summaries, from the summaries of the deployments that gate this site
(reconciler.delivery.summary): the same reports either way, so the same plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.delivery.gates import SiteReport, site_report
from reconciler.status.record import StatusRecord

__all__ = ["FleetReports"]


@dataclass(frozen=True)
class FleetReports:
    by_deployment: Mapping[str, Mapping[str, SiteReport]]  # deployment -> site -> its newest report

    @classmethod
    def of_records(cls, records: Mapping[str, StatusRecord]) -> FleetReports:
        by_deployment: dict[str, dict[str, SiteReport]] = {}
        for site, record in records.items():
            for name in record.deployments:
                if (report := site_report(record, name)) is not None:
                    by_deployment.setdefault(name, {})[site] = report
        return cls(by_deployment)

    def of(self, deployment: str) -> Mapping[str, SiteReport]:
        return self.by_deployment.get(deployment, {})

    def with_record(self, record: StatusRecord) -> FleetReports:
        """This site's own reports as its newest record says, whatever the channel held of it."""
        names = set(self.by_deployment) | set(record.deployments)
        updated = {}
        for name in names:
            reports = {site: report for site, report in self.of(name).items() if site != record.site}
            if (own := site_report(record, name)) is not None:
                reports[record.site] = own
            updated[name] = reports
        return FleetReports(updated)
