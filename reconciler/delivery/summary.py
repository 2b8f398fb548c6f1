"""PURE: shard summaries of the sites' status records, so a gate reads a few objects instead of
one record per site.

A summary is about one deployment and holds, for each site of its shard (at most SHARD_SIZE),
what that site's newest status record says about the deployment: the gate's ``SiteReport`` (with
what the plan reads beside the gate: drift on the new version, the version served before) and the
record's write time, or a tombstone when the newest record says nothing of the deployment. Every
rollout of the deployment shares the summary, as every rollout shares the status refs, so the
reports merged from all shards are exactly the reports the gate would take from the newest records
(``decide_gate`` is then given those: same input, same decision). Sites write the summaries
themselves (Git: each its entry on a ref of its own, gathered by shard into a roll-up,
reconciler.status.summary_refs; NATS: shard keys updated with compare-and-swap,
reconciler.status.nats_summaries); this module is the fold and the stored form, with no I/O.

A site may be found in two shards after the fleet grew or shrank or the waves changed (its shard
is its place among its wave's targeted sites): the entry written last wins, so a stale copy never
outvotes a newer one.

A site with status keys signs its entry (``entry_bytes``: the entry's stored fields with the site
and deployment they are about, so an entry cannot be replayed as another site's or deployment's);
a reader drops the entries its ``admit`` refuses before choosing each site's newest, so a forged
entry dated in the future cannot hide the site's genuine one."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from reconciler.delivery.gates import SiteReport, site_report
from reconciler.delivery.plan import rollout_of, targeted_sites
from reconciler.delivery.rollout import wave_groups
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.selectors import matches
from reconciler.monitoring.evaluation import EvaluationSummary
from reconciler.status.record import StatusRecord

SHARD_SIZE = 100  # sites per shard: bounds the writers contending for one summary (cf. EndpointSlices)
WRITE_ATTEMPTS = 12  # compare-and-swap tries of one NATS shard write before it fails as Transient
_FIRST_PAUSE = 0.05  # seconds: the longest pause after the first lost race; it doubles with each, 64× at most
_FORMAT = "reconciler/summary/v1"
_ANY_TIME = datetime(2000, 1, 1)


@dataclass(frozen=True)
class SummaryEntry:
    written_at: datetime  # the record's writtenAt: the newest entry of a site wins
    report: SiteReport | None  # None: the site's newest record says nothing of the deployment
    # the site's signature over entry_bytes; not compared, so folding the same record twice
    # (signatures differ each time) is still folding it once
    signature: bytes | None = field(default=None, compare=False)


Summary = Mapping[str, SummaryEntry]  # site -> its entry
Sign = Callable[[bytes], bytes]  # a site's status keys
Admit = Callable[[str, SummaryEntry], bool]  # whether a site's entry counts (its signature verifies)


def shards(waves: Iterable[Iterable[str]]) -> dict[str, int]:
    """Every site's shard, given the deployment's targeted sites wave by wave (``wave_groups``):
    each wave's sites fill shards of their own, SHARD_SIZE to a shard in name order, numbered wave
    after wave. A wave moves together, so it rewrites its own few shards and leaves the other
    waves' alone: a reader pulls the shards that moved since its last read (the NATS cursor, Git's
    roll-up files), and with shards mixing waves every shard would move in every wave."""
    numbered: dict[str, int] = {}
    first = 0
    for members in waves:
        ordered = sorted(members)
        numbered.update((site, first + place // SHARD_SIZE) for place, site in enumerate(ordered))
        first += -(-len(ordered) // SHARD_SIZE)
    return numbered


def shard_of(site: str, waves: Iterable[Iterable[str]]) -> int:
    """The site's shard among ``shards(waves)``."""
    numbered = shards(waves)
    if site not in numbered:
        raise ValueError(f"site {site!r} is not among the deployment's targeted sites")
    return numbered[site]


def lost_race_pause(attempt: int, rng: random.Random) -> float:
    """Seconds a writer waits after losing compare-and-swap ``attempt`` (0 first) on a summary:
    full jitter, so the writers of a shard that collided do not collide again in step."""
    return rng.uniform(0, _FIRST_PAUSE * 2 ** min(attempt, 6))


def gated_shards(repo: FleetRepo, site: str, now: datetime) -> dict[str, int]:
    """Each deployment that targets ``site`` with a rollout, and the site's shard of its summaries."""
    labels = repo.sites[site].metadata.labels if site in repo.sites else None
    gated = {}
    for name, deployment in sorted(repo.deployments.items()):
        rollout = rollout_of(repo, deployment)
        if labels is None or rollout is None or not matches(deployment.spec.targets, labels):
            continue
        targeted = targeted_sites(repo, deployment, now)
        if site in targeted:
            gated[name] = shard_of(site, wave_groups(rollout, name, targeted))
    return gated


@dataclass(frozen=True)
class Shard:
    number: int
    wave: str | None  # None: sites of no wave
    sites: tuple[str, ...]


def deployment_shards(repo: FleetRepo, name: str, now: datetime) -> list[Shard]:
    """The shards of ``name``'s summaries, in order, each with its wave and its sites: the layout
    to give the sites' status repositories (one per shard), for a writer carries into the roll-up
    the entries of its shard-mates that write to the same status repository. Empty for a
    deployment without a rollout (no gate reads its summaries)."""
    deployment = repo.deployments[name]
    rollout = rollout_of(repo, deployment)
    if rollout is None:
        return []
    groups = wave_groups(rollout, name, targeted_sites(repo, deployment, now))
    wave_of = {site: rollout.waves[index].name if index < len(rollout.waves) else None
               for index, members in enumerate(groups) for site in members}
    members: dict[int, list[str]] = {}
    for site, number in shards(groups).items():
        members.setdefault(number, []).append(site)
    return [Shard(number, wave_of[sites[0]], tuple(sorted(sites))) for number, sites in sorted(members.items())]


def fold(summary: Summary, record: StatusRecord, deployment: str, sign: Sign | None = None) -> dict[str, SummaryEntry]:
    """The summary with ``record`` taken in (its entry signed with ``sign``). A record older than
    the site's entry changes nothing (a retry that lost a race re-reads and folds again: folding
    twice is folding once)."""
    current = summary.get(record.site)
    if current is not None and current.written_at > record.writtenAt:
        return dict(summary)
    entry = SummaryEntry(record.writtenAt, site_report(record, deployment))
    if sign is not None:
        entry = replace(entry, signature=sign(entry_bytes(record.site, deployment, entry)))
    return {**summary, record.site: entry}


def says_the_same(before: SiteReport | None, after: SiteReport | None) -> bool:
    """Whether an entry for ``after`` would store what one for ``before`` stores, its date aside:
    a site need not rewrite its entry when only its record's write time moved."""
    return _entry_fields(SummaryEntry(_ANY_TIME, before))[1:] == _entry_fields(SummaryEntry(_ANY_TIME, after))[1:]


def entry_bytes(site: str, deployment: str, entry: SummaryEntry) -> bytes:
    """What a site signs of its entry: the fields stored, with the site and deployment."""
    return json.dumps({"site": site, "deployment": deployment, "entry": _entry_fields(entry)},
                      sort_keys=True, separators=(",", ":")).encode()


def merged(first: Summary, second: Summary) -> dict[str, SummaryEntry]:
    """Each site's newer entry of two copies of one shard's summary: merging in any order, or
    twice, gives the same summary, so writers may merge what they read without losing an entry."""
    newest = dict(first)
    for site, entry in second.items():
        if site not in newest or entry.written_at > newest[site].written_at:
            newest[site] = entry
    return newest


def merged_reports(summaries: Iterable[Summary], admit: Admit | None = None) -> dict[str, SiteReport]:
    """Every site's report from its newest entry in any shard that ``admit`` lets count: what
    ``decide_gate`` reads."""
    newest: dict[str, SummaryEntry] = {}
    for summary in summaries:
        for site, entry in summary.items():
            if admit is not None and not admit(site, entry):
                continue
            if site not in newest or entry.written_at > newest[site].written_at:
                newest[site] = entry
    return {site: entry.report for site, entry in newest.items() if entry.report is not None}


def encode(deployment: str, summary: Summary) -> bytes:
    """The stored form: one line per site, sorted, so the summary's history diffs site by site.
    A report's message is kept only for ``aborted`` (the one the gate repeats), bounding the size."""
    sites = {site: _entry_fields(entry) + _signature_field(entry) for site, entry in sorted(summary.items())}
    lines = [f'  {json.dumps(site)}: {json.dumps(fields, separators=(",", ":"))}' for site, fields in sites.items()]
    head = json.dumps({"format": _FORMAT, "deployment": deployment})[:-1]
    return (head + ', "sites": {\n' + ",\n".join(lines) + "\n}}\n").encode()


def decode(data: bytes, deployment: str) -> dict[str, SummaryEntry]:
    """A stored summary; ValueError when it is not one, or is another deployment's."""
    try:
        document = json.loads(data)
        if document.get("format") != _FORMAT or document.get("deployment") != deployment:
            raise ValueError(f"not a summary of deployment {deployment!r}")
        return {site: _entry(fields) for site, fields in document["sites"].items()}
    except (KeyError, IndexError, TypeError, AttributeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a summary: {error}") from error


def _entry_fields(entry: SummaryEntry) -> list[Any]:
    report = entry.report
    if report is None:
        return [entry.written_at.isoformat()]
    message = report.message if report.state == "aborted" else ""
    fields = [entry.written_at.isoformat(), report.rollout_id, report.state, report.version, report.since.isoformat(),
              report.reason, message, report.kind]
    # Entries written before these existed end at ``kind``, and most sites have none to say:
    # the stored list ends at the last one said, so an entry's bytes do not change as fields are added
    extra = [report.drifted, report.ran_before,
             report.evaluation.model_dump(mode="json", exclude_defaults=True) if report.evaluation else None]
    said = max((n for n, value in enumerate(extra, 1) if value), default=0)
    return fields + extra[:said]


def _signature_field(entry: SummaryEntry) -> list[dict[str, str]]:
    """A signed entry ends with ``{"sig": <status.json.sig's lines>}``: the one field that is a mapping with a ``sig`` key."""
    return [] if entry.signature is None else [{"sig": entry.signature.decode()}]


def _entry(fields: Sequence[Any]) -> SummaryEntry:
    signature = None
    if fields and isinstance(fields[-1], dict) and "sig" in fields[-1]:
        signature, fields = fields[-1]["sig"].encode(), fields[:-1]
    written_at = datetime.fromisoformat(fields[0])
    if len(fields) == 1:
        return SummaryEntry(written_at, None, signature)
    said = list(fields[8:11])
    drifted, ran_before, evaluation = said + [False, None, None][len(said):]  # the stored list ends at the last said
    rollout, state, version, since, reason, message, kind = fields[1:8]
    report = SiteReport(rollout, state, version, datetime.fromisoformat(since), written_at, reason, message, kind,
                        bool(drifted), ran_before,
                        EvaluationSummary.model_validate(evaluation) if evaluation is not None else None)
    return SummaryEntry(written_at, report, signature)
