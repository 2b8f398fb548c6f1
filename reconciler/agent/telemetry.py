"""What the agent tells an operator about its reconciles, beside the logs: Prometheus metrics on
the runtime's ``/metrics`` (in the spirit of Flux's controller metrics: a reconcile duration
histogram, a condition per object, the last success) and ``GET /v1/status``, the site's current
status record and plan as JSON. The agent reports each reconcile (``reconciled``) and each
download (``count_bytes``, ``fetch_failed``); scrapes read the last report, so a metric never
disagrees with the status record it came from."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from reconciler.delivery.plan import Plan
from reconciler.errors import Cancelled, ReconcilerError
from reconciler.status.record import StatusRecord

RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


@dataclass(frozen=True)
class _Last:
    """The newest reconcile that got as far as a record, and the plan it applied."""

    record: StatusRecord | None = None
    plan: Plan | None = None
    result: str | None = None
    finished_at: datetime | None = None
    seconds: float | None = None
    last_success: float | None = None  # Unix time


class SiteTelemetry(Collector):
    def __init__(self, site: str, clock: Callable[[], float] = time.time):
        self.site = site
        self._clock = clock
        self._duration = Histogram(
            "reconciler_reconcile_duration_seconds",
            "Time one reconcile took, by result: unchanged (nothing new), the site's state "
            "(success, progressing, pending, failure, aborted, error) or stopped.",
            ["result"], buckets=RECONCILE_BUCKETS, registry=None,
        )
        self._bytes = Counter("reconciler_download_bytes", "Artifact bytes received from their sources.", registry=None)
        self._fetch_errors = Counter("reconciler_fetch_errors", "Artifact fetches that failed, by reason.",
                                     ["reason"], registry=None)
        self._last = _Last()
        self._lock = threading.Lock()  # between the agent's thread and the metrics scrape's
        self.last_beat = time.monotonic()  # the agent is alive: systemd's watchdog (agent/sdnotify.py)

    def beat(self) -> None:
        """A sign of life: a finished reconcile or a downloaded chunk."""
        self.last_beat = time.monotonic()

    # --- reports from the agent ----------------------------------------------------------------

    def reconciled(self, seconds: float, finished_at: datetime, record: StatusRecord | None, plan: Plan | None,
                   error: ReconcilerError | None) -> None:
        """One reconcile; ``record`` None for one that found nothing new (``unchanged``)."""
        self.beat()
        with self._lock:
            last = self._last
            result = _result(record, error)
            self._duration.labels(result).observe(seconds)
            current = record or last.record
            succeeded = error is None and current is not None and current.state == "success"
            self._last = _Last(
                record=current,
                plan=plan or last.plan,
                result=result,
                finished_at=finished_at,
                seconds=seconds,
                last_success=self._clock() if succeeded else last.last_success,
            )

    def count_bytes(self, size: int) -> None:
        self._bytes.inc(size)
        self.beat()

    def fetch_failed(self, reason: str) -> None:
        self._fetch_errors.labels(reason).inc()

    # --- what operators read ----------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield from self._duration.collect()
        yield from self._bytes.collect()
        yield from self._fetch_errors.collect()
        last = self._last
        record = last.record
        site = GaugeMetricFamily("reconciler_site_condition", "The site's state and reason in its last status record (1).",
                                 labels=["state", "reason"])
        deployments = GaugeMetricFamily(
            "reconciler_deployment_condition",
            "Each deployment's state and reason in the site's last status record (1).",
            labels=["deployment", "state", "reason"],
        )
        observed = GaugeMetricFamily("reconciler_observed_commit_info", "The newest fleet commit the agent read (1).",
                                     labels=["commit"])
        applied = GaugeMetricFamily("reconciler_applied_commit_info", "The newest fleet commit fully applied (1).",
                                    labels=["commit"])
        success = GaugeMetricFamily("reconciler_last_success_timestamp_seconds",
                                    "Unix time of the last reconcile that left the site converged.")
        if record is not None:
            site.add_metric([record.state, record.reason], 1)
            for name, status in sorted(record.deployments.items()):
                deployments.add_metric([name, status.state, status.reason], 1)
            if record.observedCommit:
                observed.add_metric([record.observedCommit], 1)
            if record.appliedCommit:
                applied.add_metric([record.appliedCommit], 1)
        if last.last_success is not None:
            success.add_metric([], last.last_success)
        yield from (site, deployments, observed, applied, success)

    def status_document(self) -> dict[str, object]:
        last = self._last
        return {
            "site": self.site,
            "record": last.record.model_dump(mode="json") if last.record else None,
            "plan": last.plan.to_json() if last.plan else None,
            "lastReconcile": None if last.finished_at is None else {
                "finishedAt": last.finished_at.isoformat().replace("+00:00", "Z"),
                "seconds": round(last.seconds, 3),
                "result": last.result,
            },
        }

    def routes(self) -> list[Route]:
        async def status(request: Request) -> Response:
            return JSONResponse(self.status_document())

        return [Route("/v1/status", status)]


def _result(record: StatusRecord | None, error: ReconcilerError | None) -> str:
    if isinstance(error, Cancelled):
        return "stopped"
    if error is not None:
        return "error"
    return record.state if record is not None else "unchanged"
