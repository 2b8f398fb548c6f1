"""The ``batch`` section of a Deployment: run the model as a scheduled job over the files of a
site's input directory. The repo names inputs and outputs logically; each site's site.yaml says
which local directory a name is, so the fleet repo never holds a path of a site's disk."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from reconciler.manifests.types import DnsLabel, iana_zone


class _Section(BaseModel):
    # snake_case in the code, camelCase in YAML (either is accepted), as the rest of the language reads.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, validate_default=True,
                              alias_generator=to_camel)


def _cron_expression(expression: str) -> str:
    """Five fields, as cron(8) reads them; no seconds, no ``CRON_TZ=`` (the zone is ``timeZone``)."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"{expression!r} is not a 5-field cron expression (minute hour day-of-month month "
                         f"day-of-week), e.g. '30 2 * * *'")
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"{expression!r} is not a cron expression: {exc}") from None
    return expression


class BatchInput(_Section):
    name: DnsLabel = Field(description="The logical input: the site's site.yaml maps it to a local directory "
                                       "(`batch.inputs`).")
    glob: Annotated[str, Field(min_length=1)] = Field(
        "*", description="Which files of the directory are inputs, e.g. '*.jsonl' or '**/*.csv'.")
    format: Literal["jsonl", "csv", "npy"] = Field(
        description="jsonl: one JSON object of named inputs per line; csv: a header row and `columns` saying "
                    "which columns make each input; npy: one array whose rows are the records (models with "
                    "one input).")
    columns: dict[Annotated[str, Field(min_length=1)], Annotated[list[str], Field(min_length=1)]] = Field(
        {}, description="csv only: for each model input, the CSV columns (in order) that make its values.")

    @field_validator("glob")
    @classmethod
    def _inside_directory(cls, glob: str) -> str:
        if glob.startswith("/") or ".." in glob.split("/"):
            raise ValueError(f"glob {glob!r} must stay inside the input directory (no leading '/', no '..')")
        return glob

    @model_validator(mode="after")
    def _columns_for_csv_only(self) -> BatchInput:
        if self.format == "csv" and not self.columns:
            raise ValueError("format csv needs `columns`: for each model input, the CSV columns that make it")
        if self.format != "csv" and self.columns:
            raise ValueError(f"`columns` is for format csv only, not {self.format}")
        return self


class BatchSpec(_Section):
    """Runs every ``schedule`` tick in ``time_zone`` (Vixie cron across DST changes: a time in a
    repeated hour runs once, a time in a skipped hour right after the change), over the input
    files no run has done with this model's bytes."""

    schedule: str = Field(description="When runs start: 5-field cron (minute hour day-of-month month "
                                      "day-of-week), e.g. '30 2 * * *'.")
    time_zone: str = Field("UTC", description="IANA time zone the schedule is read in, e.g. 'Europe/Berlin'.")
    input: BatchInput = Field(description="Which files to score: logical name, glob and format.")
    output: DnsLabel = Field(description="The logical output: site.yaml maps it to a local directory "
                                         "(`batch.outputs`); one JSON Lines result per input file.")
    concurrency_policy: Literal["Forbid"] = Field(
        "Forbid", description="Forbid: a run does not start while another run of this deployment runs "
                              "(the only policy: a file is never scored twice at once).")
    max_records_per_batch: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        256, description="How many records go into one onnxruntime call.")
    max_retries: Annotated[int, Field(ge=0, le=100)] = Field(
        3, description="How many more runs may try a file that failed as a whole (unreadable, wrong "
                       "columns or shape) before it is moved aside.")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str) -> str:
        return _cron_expression(schedule)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        return iana_zone(name)
