"""Flags: evaluations per second of our evaluator against flagd's official Python in-process evaluator.

Both evaluate the example fleet's flag file (example-fleet-repo/flags/fleet.flagd.json) for every
flag, each with its type, in the context of every example site (targetingKey = site name, plus its
labels), and must agree on every value before anything is timed. Baseline: FlagdCore from
openfeature-provider-flagd (what its in-process resolver calls, without the OpenFeature client
around it), fed the same file and pre-built contexts. A repetition is a batch of passes over all
(flag, site) pairs, baseline and subject in turns. The ratio is ours over theirs: above 1 is faster.
Both keep what they prepare per flag file across passes (we compile each flag's targeting once per
FlagSet and keep a bounded cache of fractional buckets), as an agent or an OFREP server does.

    .venv/bin/python bench/bench_flags.py [--quick] [--repetitions N]"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from common import ROOT, Stats, arguments, emit, interleaved, machine  # first: puts the repo root on sys.path
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from reconciler.flags import FlagSet, evaluate, site_context
from reconciler.manifests.loader import load_directory

TARGET = 1.0
PASSES = 20  # passes over every (flag, site) pair in one timed batch
EXAMPLE = ROOT / "example-fleet-repo"
FLAG_FILE = EXAMPLE / "flags" / "fleet.flagd.json"
TYPES: dict[type, tuple[str, Any]] = {  # the flag's type -> FlagdCore's method and a code default
    bool: ("resolve_boolean_value", False),
    str: ("resolve_string_value", ""),
    float: ("resolve_float_value", 0.0),
    int: ("resolve_integer_value", 0),
    dict: ("resolve_object_value", {}),
}


def flag_types(flags: FlagSet) -> dict[str, type]:
    """Each flag's type, from its variants (numbers read as float, as OpenFeature clients do)."""
    types = {}
    for key, flag in flags.flags.items():
        value = next(iter(flag.variants.values()))
        types[key] = float if isinstance(value, int | float) and not isinstance(value, bool) else type(value)
    return types


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=40, quick=8)
    repo = load_directory(EXAMPLE).repo
    flags, types = repo.flags, flag_types(repo.flags)
    contexts = [site_context(name, site.metadata.labels) for name, site in sorted(repo.sites.items())]
    theirs_contexts = [
        EvaluationContext(context["targetingKey"], {k: v for k, v in context.items() if k != "targetingKey"})
        for context in contexts
    ]
    core = FlagdCore()
    core.set_flags(FLAG_FILE.read_text())
    pairs = [(key, kind, i) for key, kind in sorted(types.items()) for i in range(len(contexts))]

    def ours() -> list[Any]:
        now = datetime.now(UTC)
        return [evaluate(flags, key, contexts[i], now, kind, TYPES[kind][1]).value for key, kind, i in pairs]

    def theirs() -> list[Any]:
        return [getattr(core, TYPES[kind][0])(key, TYPES[kind][1], theirs_contexts[i]).value for key, kind, i in pairs]

    if ours() != theirs():
        raise SystemExit("the two evaluators disagree on the example fleet; timing them would mean nothing")

    def batch(one_pass):
        return lambda: [one_pass() for _ in range(PASSES)]

    base, subject = interleaved(batch(theirs), batch(ours), args.repetitions)
    evaluations = len(pairs) * PASSES
    base_rate = Stats.of([evaluations / seconds for seconds in base])
    subject_rate = Stats.of([evaluations / seconds for seconds in subject])
    ratio = subject_rate.median / base_rate.median
    print(f"flag evaluations/s on {FLAG_FILE.relative_to(ROOT)}: {len(types)} flags x {len(contexts)} sites ({machine()})")
    print(f"  baseline  flagd FlagdCore   {base_rate.median:10,.0f}/s  (p10 {base_rate.p10:,.0f}, p90 {base_rate.p90:,.0f})")
    print(f"  subject   reconciler.flags  {subject_rate.median:10,.0f}/s  (p10 {subject_rate.p10:,.0f}, p90 {subject_rate.p90:,.0f})")
    print(f"  ratio {ratio:.2f} (ours / flagd's; target >= {TARGET})")
    emit("flag_evaluation", ratio, f"ratio >= {TARGET}", ratio >= TARGET,
         f"{subject_rate.median:,.0f} vs {base_rate.median:,.0f} evaluations/s",
         evaluations_per_s={"reconciler": round(subject_rate.median), "flagd": round(base_rate.median)},
         pairs=len(pairs))


if __name__ == "__main__":
    main()
