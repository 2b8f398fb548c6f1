"""What every benchmark shares: timing, interleaving with a baseline, robust statistics, the
command line and the final JSON line.

The machine is shared and noisy, so a figure is never a single run: baseline and subject take
turns (baseline, subject, baseline, subject, ...) so that noise hits both alike, and we report
medians with p10/p90. Importing this module also puts the repository root on sys.path, so the
scripts run as ``python bench/<script>.py`` without the package being installed."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Stats:
    median: float
    p10: float
    p90: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        if len(samples) < 2:
            raise ValueError("statistics need at least two samples")
        deciles = statistics.quantiles(samples, n=10, method="inclusive")
        return cls(statistics.median(samples), deciles[0], deciles[-1], len(samples))

    def ms(self) -> str:
        # Enough decimals for sub-millisecond figures, few enough for seconds-long ones.
        places = 3 if self.median < 1e-3 else 2 if self.median < 1e-2 else 1
        return (f"{self.median * 1e3:8.{places}f} ms  (p10 {self.p10 * 1e3:.{places}f}, "
                f"p90 {self.p90 * 1e3:.{places}f}, n={self.n})")

    def to_json(self) -> dict[str, float | int]:
        return {"median_s": round(self.median, 6), "p10_s": round(self.p10, 6), "p90_s": round(self.p90, 6),
                "n": self.n}


def timed(action: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def interleaved(baseline: Callable[[], object], subject: Callable[[], object],
                repetitions: int) -> tuple[list[float], list[float]]:
    """Times baseline and subject in turns; returns both lists of seconds."""
    base, subj = [], []
    for _ in range(repetitions):
        base.append(timed(baseline))
        subj.append(timed(subject))
    return base, subj


def arguments(description: str, repetitions: int, quick: int) -> argparse.Namespace:
    """``--quick`` for a fast look, ``--repetitions N`` to override; the result is in .repetitions."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=f"{quick} repetitions instead of {repetitions}")
    parser.add_argument("--repetitions", type=int, help="number of interleaved repetitions")
    args = parser.parse_args()
    if args.repetitions is None:
        args.repetitions = quick if args.quick else repetitions
    if args.repetitions < 2:
        parser.error("--repetitions must be at least 2 (medians and deciles need samples)")
    return args


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def emit(benchmark: str, ratio: float, target: str, meets_target: bool, summary: str, **details: Any) -> None:
    """The last line of every benchmark: one JSON object that run_all.py reads. ``summary`` is the
    headline figure in a few words, for run_all's table."""
    print(json.dumps({"benchmark": benchmark, "ratio": round(ratio, 3), "target": target,
                      "meets_target": meets_target, "summary": summary, **details}), flush=True)
