"""README's "Status reasons" table, rendered from the catalogue (``reconciler.reasons``): one row
per reason, grouped by what happens next. ``python -m reconciler.devtools.reasons_table`` rewrites
the table in README.md; tests/unit/test_reasons.py fails when the committed table differs."""

from __future__ import annotations

import sys
from pathlib import Path

from reconciler.reasons import CATALOGUE, RETIRED, Next

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN = "<!-- status reasons: generated from reconciler/reasons.py by python -m reconciler.devtools.reasons_table -->\n"
END = "<!-- end of status reasons -->\n"
OUTCOME_NEXT = {Next.DONE: "done", Next.RETRY_NEXT_TICK: "looked at again next tick",
                Next.WAIT_FOR_CHANGE: "aborted until retried on purpose"}


def render_table() -> str:
    rows = ["| reason | what happens next | meaning |", "|---|---|---|"]
    order = list(Next)
    for entry in sorted(CATALOGUE.values(), key=lambda e: (order.index(e.next), not e.raised, e.reason)):
        then = entry.next.value if entry.raised else f"outcome: {OUTCOME_NEXT[entry.next]}"
        rows.append(f"| `{entry.reason}` | {then} | {entry.meaning} |")
    rows += [f"| `{old}` | as `{new}` | the old name, read in older records |" for old, new in sorted(RETIRED.items())]
    return "\n".join(rows) + "\n"


def table_in(readme: str) -> str:
    """The table as README holds it (between the markers)."""
    return readme.split(BEGIN, 1)[1].split(END, 1)[0]


def main() -> int:
    before, rest = README.read_text().split(BEGIN, 1)
    README.write_text(before + BEGIN + render_table() + END + rest.split(END, 1)[1])
    print(f"wrote the status reasons table of {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
