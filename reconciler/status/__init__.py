"""The status channel: status records (record.py), the status refs in git, forge commit statuses
and the gate that reads them, and the fleet matrix built from the records."""

__all__ = ["drift_view", "evaluation_view", "forge", "forge_client", "forge_gate", "gitref", "matrix", "nats_channel",
           "nats_summaries", "record", "signed", "summary_refs"]
