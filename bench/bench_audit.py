"""Audit at scale: `audit --at` and `status` over 1 000 sites x 200 status records each, as
ratios to a bare `git log` of the same status refs measured in the same run.

The history is one `git fast-import` stream (reconciler.devtools.audit_history.bulk_history): a fleet branch
with 1 000 Sites, and per site 200 status records as StatusRefs writes them, 10 minutes apart.
Subjects, in process, reading the repository by its path as the CLI does:
- audit --at near the start of the history, its middle and near its end (reconciler.history.timeline.audit_at:
  the branch as it was, every site's record in force then; the walk back from each site's newest
  record stops at that moment, so the earlier the moment, the more of the log it reads);
- status: every site's newest record and the fleet matrix, read in place as audit reads a local
  repository (reconciler.history.timeline.open_fleet: no fetch, one cat-file for every ref's tip), and as
  `reconciler status --repo PATH` reads today (a fresh cache: git fetch of every status ref,
  then StatusRefs.read_all).
Baseline: `git for-each-ref refs/reconciler/status/` and `git log --format=%H%x00%ct
--glob=refs/reconciler/status/*` on the repository, as subprocesses. Each round times the
baseline and every subject in turn; figures are medians over the rounds.

    .venv/bin/python bench/bench_audit.py [--quick] [--repetitions N]"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import Stats, arguments, emit, machine, timed  # first: puts the repo root on sys.path

from reconciler.devtools.audit_history import T0, bulk_history
from reconciler.gitdoor.source import GitSource
from reconciler.history.timeline import audit_at, open_fleet
from reconciler.manifests.loader import load_tree
from reconciler.status.gitref import STATUS_REF_PREFIX, StatusRefs
from reconciler.status.matrix import build_matrix
from reconciler.status.record import StatusRecord

SITES, RECORDS, STEP = 1000, 200, timedelta(minutes=10)
TARGET = 1.5  # audit --at the middle of the history: at most half as much again as reading the log once
ISOLATED = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def bare_git_log(repo: Path) -> None:
    for command in (["git", "for-each-ref", STATUS_REF_PREFIX],
                    ["git", "log", "--format=%H%x00%ct", f"--glob={STATUS_REF_PREFIX}*"]):
        subprocess.run(command, cwd=repo, check=True, capture_output=True, env=ISOLATED)


def audit_at_moment(repo: Path, moment: datetime) -> None:
    view = audit_at(str(repo), "main", moment)
    if sum(row.record is not None for row in view.sites) != SITES:
        raise RuntimeError(f"audit --at {moment} found records for fewer than {SITES} sites")


def status_in_place(repo: Path) -> None:
    with open_fleet(str(repo), "main") as opened:
        _matrix(opened.source, opened.head, opened.status().latest)


def status_copying(repo: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-status-") as cache, \
            GitSource(str(repo), "main", Path(cache)) as source:
        _matrix(source, source.fetch(), StatusRefs(source).read_all())


def _matrix(source: GitSource, head: str, records: dict[str, StatusRecord]) -> None:
    fleet = load_tree(source.files(head)).repo
    matrix = build_matrix(records, fleet.sites, datetime.now(UTC), timedelta(minutes=10))
    if len(matrix.rows) != SITES:
        raise RuntimeError(f"the matrix has {len(matrix.rows)} rows, not {SITES}")


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=3, quick=2)
    os.environ.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")  # no user config in any git we run
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as scratch:
        started = time.perf_counter()
        repo = bulk_history(Path(scratch), SITES, RECORDS, T0, STEP)
        generated = time.perf_counter() - started
        print(f"{SITES} sites x {RECORDS} records written by git fast-import in {generated:.1f} s")
        early, middle, late = T0 + STEP * 5, T0 + STEP * (RECORDS // 2), T0 + STEP * (RECORDS - 5)
        subjects: dict[str, Callable[[], None]] = {
            "audit --at early": lambda: audit_at_moment(repo, early),
            "audit --at middle": lambda: audit_at_moment(repo, middle),
            "audit --at late": lambda: audit_at_moment(repo, late),
            "status (in place)": lambda: status_in_place(repo),
            "status (fresh cache)": lambda: status_copying(repo),
        }
        for subject in subjects.values():  # warm the page cache and imports once
            subject()
        base: list[float] = []
        times: dict[str, list[float]] = {name: [] for name in subjects}
        for _ in range(args.repetitions):
            base.append(timed(lambda: bare_git_log(repo)))
            for name, subject in subjects.items():
                times[name].append(timed(subject))

    base_stats = Stats.of(base)
    stats = {name: Stats.of(samples) for name, samples in times.items()}
    ratios = {name: s.median / base_stats.median for name, s in stats.items()}
    print(f"audit and status over {SITES} sites x {RECORDS} records vs a bare git log of the status refs ({machine()})")
    print(f"  baseline  {'git for-each-ref + git log':<27} {base_stats.ms()}")
    for name, s in stats.items():
        print(f"  subject   {name:<27} {s.ms()}  ratio {ratios[name]:.2f}")
    headline = ratios["audit --at middle"]
    emit("audit_at_scale", headline, f"audit --at ratio <= {TARGET}", headline <= TARGET,
         f"--at {stats['audit --at middle'].median:.2f} s, status {stats['status (in place)'].median:.2f} s "
         f"vs git log {base_stats.median:.2f} s",
         sites=SITES, records_per_site=RECORDS, generate_s=round(generated, 1), baseline=base_stats.to_json(),
         subjects={name: {**s.to_json(), "ratio": round(ratios[name], 3)} for name, s in stats.items()})


if __name__ == "__main__":
    main()
