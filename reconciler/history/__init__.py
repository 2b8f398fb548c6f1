"""What happened, read back from git: the audit of the fleet's commits and status records, its
reports, status records fetched from a clone's origin or, for NATS sites, from the records
bucket, and the gated deployments' reports from the summaries' roll-ups."""

__all__ = ["archive", "audit", "html_report", "nats_records", "origin", "report", "summaries", "timeline"]
