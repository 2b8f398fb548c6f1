"""Runs every bench/bench_*.py in its own process, shows their output as it comes, and ends with a
table of their final JSON lines. A missed target is reported, not an error; a benchmark that
fails to run makes the exit status 1.

    .venv/bin/python bench/run_all.py [--quick]"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def run(script: Path, quick: bool) -> dict[str, Any] | None:
    """The benchmark's final JSON object, or None when it failed."""
    print(f"== {script.name}", flush=True)
    command = [sys.executable, str(script), *(["--quick"] if quick else [])]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            print("   " + line, end="", flush=True)
            lines.append(line)
    if process.returncode != 0 or not lines:
        print(f"!! {script.name} exited with status {process.returncode}", flush=True)
        return None
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        print(f"!! {script.name} did not end with a JSON line", flush=True)
        return None


def table(results: dict[str, dict[str, Any] | None]) -> str:
    rows = [("benchmark", "ratio", "target", "meets", "figures")]
    for script, result in results.items():
        if result is None:
            rows.append((script, "-", "-", "FAILED", "did not run to the end"))
        else:
            rows.append((result["benchmark"], f"{result['ratio']:.2f}", result["target"],
                         "yes" if result["meets_target"] else "NO", result.get("summary", "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run all benchmarks and print a table.")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions in every benchmark")
    args = parser.parse_args()
    results = {script.name: run(script, args.quick) for script in sorted(BENCH.glob("bench_*.py"))}
    print()
    print(table(results))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
