"""The batch section of a Deployment: camelCase in YAML (snake_case accepted too), each bad value
refused at its line with a sentence that says what would do."""

from __future__ import annotations

import pytest
from manifest_texts import DEPLOYMENT, load

BATCH = """\
  batch:
    schedule: "30 2 * * *"
    timeZone: Europe/Berlin
    input: {name: readings, glob: "*.jsonl", format: jsonl}
    output: scores
    maxRecordsPerBatch: 64
"""


def with_batch(text: str) -> dict[str, str]:
    return {"deployments/d.yaml": DEPLOYMENT + text}


def test_a_batch_section_loads_with_its_defaults() -> None:
    result = load(with_batch(BATCH))
    assert result.findings == []
    batch = result.repo.deployments["d"].spec.batch
    assert (batch.schedule, batch.time_zone, batch.input.name, batch.input.format, batch.output) == \
        ("30 2 * * *", "Europe/Berlin", "readings", "jsonl", "scores")
    assert (batch.concurrency_policy, batch.max_records_per_batch, batch.max_retries) == ("Forbid", 64, 3)


def test_snake_case_names_are_accepted_too() -> None:
    result = load(with_batch(BATCH.replace("timeZone", "time_zone").replace("maxRecordsPerBatch", "max_records_per_batch")))
    assert result.findings == []
    assert result.repo.deployments["d"].spec.batch.max_records_per_batch == 64


@pytest.mark.parametrize(("text", "serves"), [
    (BATCH, True),
    (BATCH + "  serve: false\n", False),
    (BATCH + "  serve: true\n  canary:\n    steps:\n      - setWeight: 10\n", True),
    (BATCH + "  serve: false\n  canary: {steps: []}\n", False),
], ids=["served-by-default", "batch-only", "served-with-canary", "batch-only-with-no-canary-steps"])
def test_a_batch_deployment_is_served_unless_it_says_serve_false(text: str, serves: bool) -> None:
    result = load(with_batch(text))
    assert result.findings == []
    assert result.repo.deployments["d"].spec.serve is serves


BAD = [
    ("six-fields", BATCH.replace('"30 2 * * *"', '"0 30 2 * * *"'), 20, "not a 5-field cron expression"),
    ("bad-cron", BATCH.replace('"30 2 * * *"', '"61 2 * * *"'), 20, "is not a cron expression"),
    ("cron-tz", BATCH.replace('"30 2 * * *"', '"CRON_TZ=UTC 30 2 * * *"'), 20, "5-field"),
    ("bad-zone", BATCH.replace("Europe/Berlin", "Mars/Olympus"), 21, "'Mars/Olympus' is not an IANA time zone"),
    ("csv-without-columns", BATCH.replace("format: jsonl", "format: csv"), 22, "format csv needs `columns`"),
    ("columns-for-jsonl", BATCH.replace("format: jsonl}", "format: jsonl, columns: {input: [a]}}"), 22,
     "`columns` is for format csv only"),
    ("glob-escapes", BATCH.replace('"*.jsonl"', '"../*.jsonl"'), 22, "must stay inside the input directory"),
    ("unknown-format", BATCH.replace("format: jsonl", "format: parquet"), 22, "'jsonl', 'csv' or 'npy'"),
    ("a-path-is-no-name", BATCH.replace("output: scores", "output: /srv/scores"), 23, "DNS label"),
    ("allow-policy", BATCH + "    concurrencyPolicy: Allow\n", 25, "'Forbid'"),
    ("no-records", BATCH.replace("64", "0"), 24, "greater than or equal to 1"),
    ("typo", BATCH.replace("maxRecordsPerBatch", "maxRecordPerBatch"), 24, "unknown field"),
    ("batch-only-without-batch", "  serve: false\n", 19, "serve: false needs a batch section"),
    ("batch-only-with-canary", BATCH + "  canary:\n    steps:\n      - setWeight: 10\n  serve: false\n", 28,
     "serve: false takes no canary: a canary splits live traffic"),
]


@pytest.mark.parametrize(("text", "line", "said"), [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_batch_sections_are_refused_at_their_line(text: str, line: int, said: str) -> None:
    result = load(with_batch(text))
    assert "d" not in result.repo.deployments
    [finding] = [f for f in result.findings if f.path == "deployments/d.yaml"]
    assert said in finding.message
    assert finding.line == line, finding.render()
