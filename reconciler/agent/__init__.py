"""The site's agent: the reconcile loop, applying a plan, the state directory, self-healing and
telemetry, wired from site.yaml's settings."""

__all__ = ["apply", "config", "headpoll", "loop", "sdnotify", "statedir", "telemetry", "wiring"]
