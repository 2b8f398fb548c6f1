"""The pure core of delivery: from the fleet's manifests, a site's state and the fleet's status
records to a plan (waves, gates, canaries, impact), with no I/O and `now` passed in."""

__all__ = ["canary", "evaluation_gate", "evidence", "fleet_checks", "fleet_reports", "gates", "impact", "model", "plan",
           "platform_fit", "rollout",
           "same_version", "schedule", "summary"]
