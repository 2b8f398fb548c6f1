"""reconciler: GitOps for machine-learning model fleets."""

__version__ = "0.1.0"
