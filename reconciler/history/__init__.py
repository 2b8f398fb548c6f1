"""What happened, read back from git: the audit of the fleet's commits and status records, its
reports, and status records fetched from a clone's origin."""

__all__ = ["archive", "audit", "origin", "report", "timeline"]
