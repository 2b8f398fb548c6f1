"""What a forge commit status says (GitHub, Gitea/Forgejo, GitLab): a mirror of the status records
for people reading pull requests, and for agents that may not push, the place where gates read the
other sites (reconciler.status.forge_gate). The Git status ref stays the source of truth. This
module is the statuses' contexts and descriptions; the forge's section of a site config is
reconciler.settings.ForgeConfig, and the HTTP client that posts and reads the statuses is
reconciler.status.forge_client.

One context per deployment and site (``reconciler/<deployment>/<site>``) and one per deployment
wave (``reconciler/<deployment>/wave-<n>``).

The description of a deployment's status is what a person reads, then `` · `` and what a gate
reads, as space-separated ``key=value`` pairs in this order:

  1.1.0 progressing at 20% (serving 1.0.0): Canary · state=progressing rollout=3f2a1c9e0b7d version=1.1.0 active=1.0.0 wave=early

``state`` (ours, exact: the forge's names lose progressing, aborted and on GitLab error), then,
when known, ``rollout`` (reconciler.delivery.gates.rollout_id), ``version`` (asked for), ``active``
(served) and ``wave``. Values are names, versions and ids, which never hold spaces. A forge's
length limit (GitHub 140, GitLab 255, Gitea 255 by our choice) cuts the human part first (with an
ellipsis), and only if the pairs alone are too long does it drop pairs from the end (wave, then
active, then version); ``state`` and ``rollout``, at most 38 characters, always fit."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from reconciler.status.record import DeploymentStatus, State, StatusRecord

CONTEXT_PREFIX = "reconciler/"
_FAILED: frozenset[State] = frozenset({"failure", "aborted", "error"})
GATE_SEPARATOR = " · "
# The pairs a gate reads, most needed first: a forge's length limit drops them from the end.
GATE_KEYS = ("state", "rollout", "version", "active", "wave", "kind", "reason")
_VALUE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]*")  # versions, DNS labels, rollout ids
_GATE_PAIRS = re.compile(rf"(?:^|{re.escape(GATE_SEPARATOR)})(state=[a-z]+(?: [a-z]+={_VALUE.pattern})*)$")


class CommitStatus(BaseModel):
    """One context's status, in our state names; the forge's names are applied when posting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    context: str
    state: State
    description: str
    target_url: str | None = None


class ShownStatus(CommitStatus):
    """A status as the forge shows it, with the forge's instant of its newest change and how many
    statuses were posted for its context on the commit (1: it never changed there)."""

    at: datetime
    changes: int = 1


def deployment_context(deployment: str, site: str) -> str:
    return f"{CONTEXT_PREFIX}{deployment}/{site}"


def wave_context(deployment: str, wave: int | str) -> str:
    return f"{CONTEXT_PREFIX}{deployment}/wave-{wave}"


def target_url(template: str | None, site: str, deployment: str) -> str | None:
    """``ForgeConfig.target_url`` filled in; None without a template."""
    return template.format(site=site, deployment=deployment) if template else None


def statuses_for_record(record: StatusRecord, target_url_template: str | None = None) -> list[CommitStatus]:
    """One status per deployment of the site, in deployment order; the description ends with the
    pairs a gate reads (see the module's docstring)."""
    return [
        CommitStatus(
            context=deployment_context(name, record.site),
            state=status.state,
            description=describe_deployment(status) + GATE_SEPARATOR + gate_pairs(status),
            target_url=target_url(target_url_template, record.site, name),
        )
        for name, status in sorted(record.deployments.items())
    ]


def describe_deployment(status: DeploymentStatus) -> str:
    """What a person needs at a glance: the version served, and on trouble the reason first."""
    serving = status.activeVersion
    version = status.version or serving or "no version"
    if status.state == "success":
        was = f" (was {status.previousVersion})" if status.previousVersion not in (None, serving) else ""
        return f"{serving or version} serving{was}"
    message = f": {status.message}" if status.message else ""
    if status.state in _FAILED:
        return f"{status.state}: {status.reason} on {version}, serving {serving or 'nothing'}{message}"
    share = f" at {status.weights[version]}%" if version in status.weights else ""
    where = f" (serving {serving})" if serving and serving != version else ""
    return f"{version} {status.state}{share}{where}: {status.reason}{message}"


def gate_pairs(status: DeploymentStatus) -> str:
    """``state=… rollout=… version=… active=… wave=… kind=… reason=…``, leaving out what is unknown
    (the failure's kind and reason are there only on a failure or an error: the abort rule counts
    only version evidence). A value that is not a plain token (only a hand-made record has one) is
    left out rather than misread."""
    failed = status.failureKind is not None
    values = (status.state, status.rollout, status.version, status.activeVersion, status.wave, status.failureKind,
              status.reason if failed else None)
    return " ".join(f"{key}={value}" for key, value in zip(GATE_KEYS, values, strict=True)
                    if value is not None and _VALUE.fullmatch(value))


def split_description(description: str) -> tuple[str, dict[str, str]]:
    """The human part and the gate's pairs of a description; no pairs: the whole text and {}.
    A key given twice makes the pairs unreadable."""
    match = _GATE_PAIRS.search(description)
    if match is None:
        return description, {}
    pairs = [pair.split("=", 1) for pair in match[1].split(" ")]
    fields = dict(pairs)
    if len(fields) < len(pairs):
        return description, {}
    return description[:match.start()], fields


def fit_description(description: str, limit: int) -> str:
    """The description in at most ``limit`` characters: the human part is cut first; pairs are
    dropped from the end only when they alone do not fit."""
    human, fields = split_description(description)
    if not fields:
        return truncate(description, limit)
    pairs = [f"{key}={value}" for key, value in fields.items()]
    while pairs and len(" ".join(pairs)) > limit:
        pairs.pop()
    if not pairs:
        return truncate(human, limit)
    tail = " ".join(pairs)
    room = limit - len(tail) - len(GATE_SEPARATOR)
    human = truncate(human, room) if room > 1 else ""  # a lone ellipsis tells nobody anything
    return human + GATE_SEPARATOR + tail if human else tail


def wave_status(
    deployment: str,
    wave: int | str,
    site_records: Mapping[str, DeploymentStatus | None],
    total: int,
    version: str | None = None,
    target_url: str | None = None,
) -> CommitStatus:
    """The combined status of one wave: ``site_records`` holds what the wave's sites report for
    ``deployment`` (None: nothing yet), ``total`` how many sites the wave has. Healthy means
    success (at ``version`` when given). As in GitHub's combined status, any failure, abort or
    error fails the wave; otherwise it is pending until every site is healthy."""
    if total < len(site_records):
        raise ValueError(f"wave {wave} of {deployment}: {len(site_records)} site records but only {total} sites")
    reported = [status for status in site_records.values() if status is not None]
    healthy = sum(1 for s in reported if s.state == "success" and version in (None, s.activeVersion))
    failed = sum(1 for s in reported if s.state in _FAILED)
    waiting = total - healthy - failed
    state: State = "failure" if failed else "success" if waiting == 0 else "pending"
    counts = f"{healthy}/{total} healthy" + (f", {failed} failed" if failed else "") + (
        f", {waiting} pending" if waiting else "")
    return CommitStatus(
        context=wave_context(deployment, wave),
        state=state,
        description=f"{version}: {counts}" if version else counts,
        target_url=target_url,
    )


def truncate(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters, cut with an ellipsis before a whole character
    (a base letter is never separated from its combining accents)."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = limit - 1
    while cut > 0 and unicodedata.combining(line[cut]):
        cut -= 1
    return line[:cut].rstrip() + "…"
