"""Scripted fleet histories in real git repositories, for the audit and report tests and the audit
benchmark.

``scripted_history`` plays a small story with known truth: twelve sites on 1.0.0, the scorer's
1.1.0 rolled out in waves over hours (canary, then early, where site-05 fails), then rolled back.
Fleet commits are made by different people at set dates (one SSH-signed by an allowed key, one by a
key nobody allowed, one a merge); status records are written by StatusRefs with set ``writtenAt``.

``bulk_history`` writes many sites × many records in one ``git fast-import`` stream, records as
StatusRefs writes them (same JSON, commit dated with ``writtenAt``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from pydantic import TypeAdapter

from reconciler import reasons
from reconciler.gitdoor.git import ISOLATED_ENV
from reconciler.gitdoor.source import GitSource
from reconciler.status.gitref import STATUS_FILE, STATUS_REF_PREFIX, StatusRefs, record_json
from reconciler.status.record import DeploymentStatus, StatusRecord

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
SITES = [f"site-{n:02d}" for n in range(1, 13)]
RINGS = {"canary": SITES[0:2], "early": SITES[2:6], "main": SITES[6:12]}
FAILING_SITE = "site-05"
LATE_SITE = "site-11"  # first reports an hour in
SILENT_SITE = "site-12"  # never reports
_DIGEST = {"1.0.0": "sha256:" + "1" * 64, "1.1.0": "sha256:" + "2" * 64, "2.0.0": "sha256:" + "3" * 64}

FLEET = """apiVersion: reconciler/v1
kind: Fleet
metadata:
  name: audit-fleet
spec:
  staleAfter: 10m
"""
DEPLOYMENT = """apiVersion: reconciler/v1
kind: Deployment
metadata:
  name: scorer
spec:
  model: scorer
  version: {version}
  targets:
    matchLabels:
      tier: store
  rollout:
    waves:
      - name: canary
        selector:
          matchLabels:
            ring: canary
      - name: early
        selector:
          matchLabels:
            ring: early
      - name: rest
        percent: 100
    gate:
      bakeTime: {bake}
"""
RANKER = """apiVersion: reconciler/v1
kind: Deployment
metadata:
  name: ranker
spec:
  model: ranker
  version: 2.0.0
  targets:
    matchLabels:
      ring: main
"""


def model_yaml(name: str, versions: list[str]) -> str:
    entries = "".join(
        f"""  - version: {version}
    artifacts:
      - uri: models/{name}/{version}.onnx
        digest: {_DIGEST[version]}
        size: 100
        signature:
          uri: models/{name}/{version}.onnx.sig
""" for version in versions)
    return f"""apiVersion: reconciler/v1
kind: Model
metadata:
  name: {name}
spec:
  interface:
    inputs: [{{name: x, dtype: float32, shape: [-1, 2]}}]
    outputs: [{{name: y, dtype: float32, shape: [-1, 1]}}]
  versions:
{entries}"""


def site_yaml(site: str, extra: str = "") -> str:
    ring = next(ring for ring, members in RINGS.items() if site in members)
    return (f"apiVersion: reconciler/v1\nkind: Site\nmetadata:\n  name: {site}\n  labels:\n"
            f"    tier: store\n    ring: {ring}\n{extra}")


@dataclass(frozen=True)
class Person:
    name: str
    email: str


ALICE = Person("Alice Admin", "alice@example.com")
BOB = Person("Bob Builder", "bob@example.com")
CAROL = Person("Carol Release", "carol@example.com")
DAVE = Person("Dave Oncall", "dave@example.com")
ERIN = Person("Erin Merger", "erin@example.com")
FRANK = Person("Frank Feature", "frank@example.com")


@dataclass
class ScriptedHistory:
    bare: Path  # the fleet repository: branch main and the status refs
    commits: dict[str, str] = field(default_factory=dict)  # step -> fleet commit
    commit_times: dict[str, datetime] = field(default_factory=dict)
    allowed_signers: Path | None = None  # names Carol's key (None: ssh-keygen missing, nothing signed)

    @property
    def signed(self) -> bool:
        return self.allowed_signers is not None

    def fleet_commit_at(self, at: datetime) -> str | None:
        before = [step for step, time in self.commit_times.items() if time <= at]
        return self.commits[max(before, key=self.commit_times.__getitem__)] if before else None


# What each site's scorer did, as (minutes after T0, state, served, desired); ranker runs 2.0.0 on
# the main ring throughout. Seconds may be fractional: a record can be written mid-second.
def _scorer_events() -> dict[str, list[tuple[float, str, str, str]]]:
    events: dict[str, list[tuple[float, str, str, str]]] = {}
    for index, site in enumerate(SITES):
        if site == SILENT_SITE:
            continue
        first = 60.0 if site == LATE_SITE else 5 + index / 6  # 10 s apart
        events[site] = [(first, "success", "1.0.0", "1.0.0")]
    for offset, site in enumerate(RINGS["canary"]):
        events[site] += [(130 + offset / 6, "progressing", "1.0.0", "1.1.0"),
                         (132 + offset * (0.5 / 60), "success", "1.1.0", "1.1.0")]
    for offset, site in enumerate(RINGS["early"]):
        if site == FAILING_SITE:
            events[site] += [(180 + offset, "failure", "1.0.0", "1.1.0"), (246, "success", "1.0.0", "1.0.0")]
        else:
            events[site] += [(180 + offset, "success", "1.1.0", "1.1.0"),
                             (245 + offset / 6, "success", "1.0.0", "1.0.0")]
    for offset, site in enumerate(RINGS["canary"]):
        events[site] += [(245 - 1 / 6 + offset / 60, "success", "1.0.0", "1.0.0")]
    return {site: sorted(items) for site, items in events.items()}


SCORER_EVENTS = _scorer_events()
WAVE = {site: ring if ring != "main" else "rest" for ring, members in RINGS.items() for site in members}


def minutes(value: float) -> datetime:
    return T0 + timedelta(minutes=value)


def expected_served_at(at: datetime) -> dict[str, tuple[str, str, str] | None]:
    """The scripted truth: per site, (state, served, desired) of the scorer at ``at``; None when
    the site had written nothing by then."""
    truth: dict[str, tuple[str, str, str] | None] = {}
    for site in SITES:
        done = [event for event in SCORER_EVENTS.get(site, []) if minutes(event[0]) <= at]
        truth[site] = done[-1][1:] if done else None
    return truth


def scripted_history(root: Path) -> ScriptedHistory:
    bare = root / "fleet.git"
    _git(None, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    clone = root / "clone"
    _git(None, "clone", "--quiet", str(bare), str(clone))
    _git(clone, "symbolic-ref", "HEAD", "refs/heads/main")
    history = ScriptedHistory(bare=bare.resolve())
    signers = _ssh_signers(root / "keys")
    if signers:
        history.allowed_signers = signers["allowed"]

    def commit(step: str, person: Person, at: datetime, files: dict[str, str], message: str,
               signing_key: Path | None = None) -> None:
        for name, text in files.items():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            (clone / name).write_text(text)
        _git(clone, "add", "--all")
        sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={signing_key}"] if signing_key else []
        _git(clone, *sign, "commit", "--quiet", *(["-S"] if signing_key else []), "-m", message,
             env=_identity(person, at))
        _git(clone, "push", "--quiet", "origin", "HEAD:main")
        history.commits[step] = _git(clone, "rev-parse", "HEAD")
        history.commit_times[step] = at

    sites = {f"sites/{site}.yaml": site_yaml(site) for site in SITES}
    commit("initial", ALICE, T0, {"fleet.yaml": FLEET, **sites, "models/scorer.yaml": model_yaml("scorer", ["1.0.0"]),
                                  "models/ranker.yaml": model_yaml("ranker", ["2.0.0"]),
                                  "deployments/scorer.yaml": DEPLOYMENT.format(version="1.0.0", bake="5m"),
                                  "deployments/ranker.yaml": RANKER}, "Initial fleet")
    commit("add-version", BOB, minutes(60), {"models/scorer.yaml": model_yaml("scorer", ["1.0.0", "1.1.0"])},
           "scorer: add model version 1.1.0")
    commit("site-labels", BOB, minutes(90), {"sites/site-01.yaml": site_yaml("site-01", "    city: berlin\n")},
           "site-01: add its city")
    commit("rollout", CAROL, minutes(120), {"deployments/scorer.yaml": DEPLOYMENT.format(version="1.1.0", bake="5m")},
           "Roll out scorer 1.1.0", signers.get("carol"))
    commit("rollback", DAVE, minutes(240), {"deployments/scorer.yaml": DEPLOYMENT.format(version="1.0.0", bake="5m")},
           "Roll back scorer to 1.0.0\n\nsite-05 failed validation.", signers.get("dave"))
    _merge_branch(clone, history)
    commit("broken", FRANK, minutes(330), {"deployments/ranker.yaml": RANKER + "  oops: [\n"}, "ranker: tweak")
    commit("fixed", FRANK, minutes(345), {"deployments/ranker.yaml": RANKER}, "ranker: undo the broken tweak")

    with GitSource(str(bare), "main", root / "status-cache") as source:
        refs = StatusRefs(source)
        for record in sorted(_records(history), key=lambda record: record.writtenAt):
            refs.write(record)
    return history


def _merge_branch(clone: Path, history: ScriptedHistory) -> None:
    """Frank changes the scorer's bake time on a branch; Erin merges it with a merge commit."""
    _git(clone, "checkout", "--quiet", "-b", "bake-time")
    (clone / "deployments/scorer.yaml").write_text(DEPLOYMENT.format(version="1.0.0", bake="15m"))
    _git(clone, "commit", "--quiet", "-am", "scorer: bake 15m between waves", env=_identity(FRANK, minutes(270)))
    _git(clone, "checkout", "--quiet", "main")
    _git(clone, "merge", "--quiet", "--no-ff", "-m", "Merge branch 'bake-time'", "bake-time",
         env=_identity(ERIN, minutes(300)))
    _git(clone, "push", "--quiet", "origin", "HEAD:main")
    history.commits["merge"] = _git(clone, "rev-parse", "HEAD")
    history.commit_times["merge"] = minutes(300)


def _records(history: ScriptedHistory) -> Iterator[StatusRecord]:
    for site, events in SCORER_EVENTS.items():
        for at_minutes, state, served, desired in events:
            at = minutes(at_minutes)
            observed = history.fleet_commit_at(at)
            deployments = {"scorer": DeploymentStatus(model="scorer", state=state, version=desired,
                                                      activeVersion=served, wave=WAVE[site],
                                                      reason=reasons.Converged if state == "success" else "Rollout",
                                                      since=at)}
            if site in RINGS["main"]:
                deployments["ranker"] = DeploymentStatus(model="ranker", state="success", version="2.0.0",
                                                         activeVersion="2.0.0", reason=reasons.Converged, since=at)
            yield StatusRecord(site=site, observedCommit=observed, appliedCommit=observed, state=state,
                                   reason=reasons.Converged, deployments=deployments, agentVersion="test",
                                   writtenAt=at)


def _ssh_signers(keys: Path) -> dict[str, Path]:
    """Carol's key (allowed) and Dave's (not), or nothing without ssh-keygen."""
    if shutil.which("ssh-keygen") is None:
        return {}
    keys.mkdir(parents=True)
    found = {}
    for name in ("carol", "dave"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(keys / name)],
                       check=True, capture_output=True)
        found[name] = keys / name
    public = (keys / "carol.pub").read_text().split()
    found["allowed"] = keys / "allowed_signers"
    found["allowed"].write_text(f"{CAROL.email} {public[0]} {public[1]}\n")
    return found


def _identity(person: Person, at: datetime) -> dict[str, str]:
    stamp = at.isoformat()
    return {"GIT_AUTHOR_NAME": person.name, "GIT_AUTHOR_EMAIL": person.email, "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_NAME": person.name, "GIT_COMMITTER_EMAIL": person.email, "GIT_COMMITTER_DATE": stamp}


def _git(cwd: Path | None, *args: str, env: dict[str, str] | None = None) -> str:
    default = {"GIT_AUTHOR_NAME": ALICE.name, "GIT_AUTHOR_EMAIL": ALICE.email, "GIT_COMMITTER_NAME": ALICE.name,
               "GIT_COMMITTER_EMAIL": ALICE.email}
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **default, **ISOLATED_ENV, **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


# --- many sites, many records, one fast-import stream ---------------------------------------------

BULK_VERSIONS = ("1.0.0", "1.1.0", "1.2.0")


def bulk_site(index: int) -> str:
    return f"site-{index:04d}"


def bulk_record(site: str, index: int, start: datetime, step: timedelta) -> StatusRecord:
    """The ``index``-th record of a bulk site: versions move up every few records, a failure now
    and then; written at ``start + index × step`` plus a per-site offset of whole seconds."""
    return _bulk_status(site, *_bulk_fields(site, index, start, step))


def _bulk_status(site: str, at: datetime, served: str, state: str) -> StatusRecord:
    deployment = DeploymentStatus(model="scorer", state=state, version=served, activeVersion=served, wave="rest",
                                  reason=reasons.Converged, since=at)
    return StatusRecord(site=site, observedCommit="f" * 40, appliedCommit="f" * 40, state=state, reason=reasons.Converged,
                        deployments={"scorer": deployment}, agentVersion="bench", writtenAt=at)


def _bulk_fields(site: str, index: int, start: datetime, step: timedelta) -> tuple[datetime, str, str]:
    at = start + index * step + timedelta(seconds=int(site[-4:]) % 60)
    return at, BULK_VERSIONS[(index // 7) % len(BULK_VERSIONS)], "failure" if index % 13 == 12 else "success"


def bulk_history(root: Path, sites: int, records: int, start: datetime = T0,
                 step: timedelta = timedelta(minutes=10)) -> Path:
    """A bare fleet repo with ``sites`` Sites and one Deployment on main, and ``records`` status
    records per site, all written by one ``git fast-import``. Returns the repository's path."""
    bare = root / "bulk.git"
    _git(None, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    importer = subprocess.Popen(["git", "fast-import", "--quiet", "--date-format=raw"], stdin=subprocess.PIPE,
                                cwd=bare, env={**os.environ, **ISOLATED_ENV})
    assert importer.stdin is not None
    with importer.stdin as stream:
        _fleet_commit_stream(stream, sites, start)
        templates = _BulkTemplates()
        for number in range(1, sites + 1):
            site = bulk_site(number)
            for index in range(records):
                at, served, state = _bulk_fields(site, index, start, step)
                body = templates.json(site, at, served, state)
                message = f"{site}: {state}\n".encode()
                stream.write(b"commit %s%s\ncommitter reconciler-agent <%s@reconciler.local> %d +0000\n"
                             % (STATUS_REF_PREFIX.encode(), site.encode(), site.encode(), int(at.timestamp())))
                stream.write(b"data %d\n%s" % (len(message), message))
                stream.write(b"M 100644 inline " + STATUS_FILE.encode() + b"\ndata %d\n%s\n" % (len(body), body))
    if importer.wait() != 0:
        raise RuntimeError(f"git fast-import failed in {bare}")
    return bare.resolve()


class _BulkTemplates:
    """record_json of bulk records, fast: one real record_json per (version, state), then only the
    site and the time are put in. The tests read the records back and compare with bulk_record."""

    _SITE, _AT = "site-template", datetime(2000, 1, 1, tzinfo=UTC)

    def __init__(self) -> None:
        self._texts: dict[tuple[str, str], str] = {}
        self._time = TypeAdapter(datetime)

    def json(self, site: str, at: datetime, served: str, state: str) -> bytes:
        if (served, state) not in self._texts:
            self._texts[served, state] = record_json(_bulk_status(self._SITE, self._AT, served, state)).decode()
        sample_time = self._time.dump_python(self._AT, mode="json")
        text = self._texts[served, state].replace(self._SITE, site)
        return text.replace(sample_time, self._time.dump_python(at, mode="json")).encode()


def _fleet_commit_stream(stream: IO[bytes], sites: int, start: datetime) -> None:
    files = {"fleet.yaml": FLEET, "models/scorer.yaml": model_yaml("scorer", ["1.0.0", "1.1.0"]),
             "deployments/scorer.yaml": json.dumps({"apiVersion": "reconciler/v1", "kind": "Deployment",
                                                    "metadata": {"name": "scorer"},
                                                    "spec": {"model": "scorer", "version": "1.1.0"}})}
    files |= {f"sites/{bulk_site(n)}.yaml": f"apiVersion: reconciler/v1\nkind: Site\nmetadata:\n"
              f"  name: {bulk_site(n)}\n  labels:\n    tier: store\n" for n in range(1, sites + 1)}
    message = b"Bulk fleet\n"
    stream.write(f"commit refs/heads/main\ncommitter {ALICE.name} <{ALICE.email}> {int(start.timestamp())} +0000\n"
                 .encode())
    stream.write(b"data %d\n%s" % (len(message), message))
    for path, text in files.items():
        data = text.encode()
        stream.write(f"M 100644 inline {path}\n".encode() + b"data %d\n%s\n" % (len(data), data))
