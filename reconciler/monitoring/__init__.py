"""PURE: drift monitoring. A reference profile frozen from training data (``profile``), the
statistics that compare a window of live traffic with it (``stats``), and the windows and the
DriftDetected state machine of a site (``windows``). No I/O: files are read by the CLI and the
agent, counting happens in the runtime (runtime/drift_counter.py), ``now`` is passed in."""

__all__ = ["binning", "evaluation", "profile", "stats", "tables", "windows"]
