"""PURE: checks of a whole fleet that need the rollout rules the sites apply (which sites a
deployment targets, with its flags, and which wave each falls in). ``validate`` and
``plan --base/--head`` run them beside the manifest semantics."""

from __future__ import annotations

from datetime import datetime

from reconciler.delivery.plan import rollout_of, targeted_sites
from reconciler.delivery.rollout import wave_of
from reconciler.manifests.deployments import Deployment
from reconciler.manifests.fleet import Finding, FleetRepo
from reconciler.manifests.semantics import origin_of

SHOWN_SITES = 5


def check(repo: FleetRepo, now: datetime) -> list[Finding]:
    findings = []
    for name in sorted(repo.deployments):
        deployment = repo.deployments[name]
        stranded = sites_in_no_wave(repo, deployment, now)
        if stranded:
            findings.append(_no_wave_finding(repo, deployment, stranded))
    return findings


def sites_in_no_wave(repo: FleetRepo, deployment: Deployment, now: datetime) -> list[str]:
    """Targeted sites that none of the deployment's waves holds: they would wait for ever
    (``NotInAnyWave``) and never run the version."""
    rollout = rollout_of(repo, deployment)
    if rollout is None:
        return []
    name = deployment.metadata.name
    return sorted(site for site, labels in targeted_sites(repo, deployment, now).items()
                  if wave_of(rollout, name, site, labels) is None)


def _no_wave_finding(repo: FleetRepo, deployment: Deployment, stranded: list[str]) -> Finding:
    name = deployment.metadata.name
    if deployment.spec.rollout is not None:
        origin, field, whose = origin_of(repo, "Deployment", name), "spec.rollout.waves", "its waves"
    else:
        fleet = repo.fleet.metadata.name if repo.fleet else "?"
        origin, field = origin_of(repo, "Fleet", fleet), "spec.defaultRollout.waves"
        whose = "the Fleet's default waves"
    shown = ", ".join(stranded[:SHOWN_SITES]) + (f" and {len(stranded) - SHOWN_SITES} more"
                                                   if len(stranded) > SHOWN_SITES else "")
    message = (f"{field}: site(s) {shown} targeted by deployment '{name}' fall in none of {whose}, so they "
               "would wait for ever (NotInAnyWave); end the waves with one of percent 100, or select those sites")
    return Finding(origin.path, origin.line, 1, message, field=field)
