"""The status channel: status records (record.py), the status refs in git, forge commit statuses
and the gate that reads them, and the fleet matrix built from the records (or from the summaries'
reports, report_matrix.py)."""

__all__ = ["drift_view", "evaluation_view", "forge", "forge_client", "forge_gate", "gitref", "matrix", "nats_channel",
           "nats_summaries", "record", "report_matrix", "signed",
           "summary_refs"]
