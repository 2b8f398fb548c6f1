"""``reconciler plan --base REV --head REV``: the fleet impact of a change, for a pull request,
with the head checked as a site would check it: the manifests, the fleet (sites in no wave), and
the artifacts of every version the change makes sites run (``artifact_check.py``, on the head's
own tree), and a change that redefines a released version (other bytes under its name) is an
error. What each moving site does next is judged from the status records the repository
holds (``refs/reconciler/status/*``), or from the sites' shard summaries (the roll-ups of
``--summary-repo``, or the NATS summaries bucket of ``--nats-server``), as the gates judge it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.cli.artifact_check import ArtifactOptions, VersionKey, check_artifacts, versions_in_use
from reconciler.cli.validate import fleet_findings
from reconciler.delivery.fleet_reports import FleetReports
from reconciler.delivery.impact import Impact, changed_deployments, fleet_impact
from reconciler.delivery.plan import Unplannable, pick_artifact, rollout_of, target_for, targeted_sites
from reconciler.errors import ReconcilerError
from reconciler.gitdoor.source import GitSource, open_commit, open_revision
from reconciler.history.archive import StatusArchive
from reconciler.manifests.fleet import Finding, FleetRepo
from reconciler.manifests.loader import load_tree
from reconciler.manifests.models import Artifact
from reconciler.manifests.semantics import origin_of
from reconciler.status.record import StatusRecord
from reconciler.status.signed import RecordCheck
from reconciler.trust import TrustRoots

if TYPE_CHECKING:
    from reconciler.cli.summaries import SummaryReader

log = logging.getLogger(__name__)


def check_change(location: str, base_rev: str, head_rev: str, options: ArtifactOptions, now: datetime,
                 summaries: SummaryReader | None = None) -> Impact:
    """With ``summaries`` (cli/summaries.py ``summary_reader``), what each moving site does next is
    judged from the changed deployments' summaries it reads, as the gates judge it."""
    with open_revision(location, base_rev) as (base_sha, files):
        base = load_tree(files).repo
    with open_commit(location, head_rev) as (source, head_sha):
        files = {file.path: file for file in source.files(head_sha)}
        head = load_tree(files.values())

        def check(repo: FleetRepo):
            report = check_artifacts(repo, source.tree(head_sha), options, None if options.all_versions else changed_versions(base, repo))
            return replace(report, findings=[*report.findings, *redefined_versions(base, repo, now)])

        findings, report = fleet_findings(head, lambda path: files[path].read() if path in files else None, now, check)
        status = _status_records(source, head.repo, local=Path(location).is_dir()) if summaries is None else \
            _summary_reports(summaries, base, head.repo)
    return fleet_impact(base, head.repo, base_sha, head_sha, now, findings, status,
                        report.checked if report is not None else None, describe_roots(options.roots),
                        signatures_verified=options.roots is not None)


def changed_versions(base: FleetRepo, head: FleetRepo) -> set[VersionKey]:
    """Versions the head's Deployments ask for that the base did not ask for, or that the change
    redefines (their artifacts, cases or signers, or their Model's interface)."""
    asked_before = versions_in_use(base)
    changed = set()
    for model_name, version in versions_in_use(head):
        before, after = base.models.get(model_name), head.models[model_name]
        if (model_name, version) not in asked_before or before is None or \
                before.spec.interface != after.spec.interface or before.spec.version(version) != after.spec.version(version):
            changed.add((model_name, version))
    return changed


def redefined_versions(base: FleetRepo, head: FleetRepo, now: datetime) -> list[Finding]:
    """An error for each version the base defines whose artifacts the head changes: a released
    version never changes (sites would serve other bytes under the same name, same_version.py),
    at the first artifact that differs, naming the sites that would swap bytes."""
    findings = []
    for name, after in sorted(head.models.items()):
        before = base.models.get(name)
        for index, version in enumerate(after.spec.versions):
            released = before.spec.version(version.version) if before is not None else None
            if released is None or released.artifacts == version.artifacts:
                continue
            at = _first_changed_artifact(f"spec.versions[{index}]", released.artifacts, version.artifacts)
            swapping = _sites_swapping_bytes(head, name, version.version, released.artifacts, now)
            origin = origin_of(head, "Model", name)
            findings.append(Finding(origin.path, origin.line, 1, (
                f"{at}: model {name} version {version.version} is already released with other artifacts; a "
                "released version never changes: release a new version instead (reconciler add-version) and "
                "point the Deployment at it. Sites that would swap bytes under the same version: "
                f"{', '.join(swapping) or 'none now'}"), "error", at))
    return findings


def _first_changed_artifact(at: str, released: list[Artifact], head: list[Artifact]) -> str:
    released_digests = {artifact.digest for artifact in released}
    for index, artifact in enumerate(head):
        if artifact not in released:
            field = f"{at}.artifacts[{index}]"
            return field if artifact.digest in released_digests else f"{field}.digest"
    return f"{at}.artifacts"


def _sites_swapping_bytes(head: FleetRepo, model: str, version: str, released: list[Artifact],
                          now: datetime) -> list[str]:
    """Sites the head runs ``version`` at with other bytes than the released version picked there."""
    sites = set()
    for deployment in head.deployments.values():
        if deployment.spec.model != model:
            continue
        for site_name, labels in targeted_sites(head, deployment, now).items():
            try:
                target = target_for(head, deployment, head.sites[site_name], now)
            except Unplannable:
                continue
            old = pick_artifact(released, labels)
            if target is not None and target.version == version and (old is None or old.digest != target.artifact.digest):
                sites.add(site_name)
    return sorted(sites)


def describe_roots(roots: TrustRoots | None) -> str:
    if roots is None:
        return "not verified: no trust root given (--trust-key PUB, or --identity ID --issuer URL)"
    return f"verified against {roots.describe()}"


def _summary_reports(summaries: SummaryReader, base: FleetRepo, head: FleetRepo) -> FleetReports:
    """The reports of the changed deployments that have a rollout at the head (the others have no
    summary), from their summaries."""
    from reconciler.cli.summaries import read_reports

    gated = [name for name in changed_deployments(base, head)
             if name in head.deployments and rollout_of(head, head.deployments[name]) is not None]
    return read_reports(summaries, head, gated)


def _status_records(source: GitSource, fleet: FleetRepo, local: bool) -> Mapping[str, StatusRecord] | None:
    """Every site's newest record that verifies against ``fleet``'s Site documents: from the local
    repository's refs, or fetched from a URL."""
    try:
        return StatusArchive(source, fetch=not local, check=RecordCheck.of_fleet(fleet)).latest
    except ReconcilerError as error:
        log.warning("status records not read: %s", error)
        return None
