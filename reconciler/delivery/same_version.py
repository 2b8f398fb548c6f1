"""PURE: what a site does when the fleet repo changes a version it already serves, under the same
version name. Two cases, both invisible to a comparison of version names:

* **redefined**: the version now pins other bytes (another digest). A released version must never
  change (``add-version`` refuses with ``VersionExists``, ``plan --base/--head`` blocks it), but a
  change that got merged anyway is Git's desired state. The site *deploys* it, reported as
  ``VersionRedefined`` with both digests and logged as a warning, rather than refusing: a refusing
  site would keep the old bytes while every site that installs the version afresh gets the new
  ones, so one version name would serve two models across the fleet for good; deploying keeps the
  fleet on one set of bytes, and the bytes are still digest-pinned, signature-verified and
  validated like any new version. It switches at once, with no canary: a canary compares two
  versions by name, and here both have the same name. The version the site served *before* the
  redefined one stays the rollback target (``previous``), never the old bytes of the same name.
* **checks changed**: the same bytes, but the Model's interface or the version's validation cases
  changed. What the site validated is no longer what the fleet asks for, so it validates the kept
  blob again (no download) before it says it serves the fleet's definition (``ChecksChanged``).
  When that validation fails, the site keeps serving the version as it validated it, and reports
  the failure (version evidence, as for any version that fails its checks): the status never says
  it converged on a definition its model does not meet.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from reconciler import reasons
from reconciler.manifests.models import ModelInterface, ValidationCase
from reconciler.manifests.types import Digest

if TYPE_CHECKING:
    from reconciler.delivery.model import DeploymentState, Installed
    from reconciler.delivery.plan import Target

VERSION_REDEFINED = reasons.VersionRedefined
CHECKS_CHANGED = reasons.ChecksChanged
NEW_VERSION = reasons.NewVersion


def checks_digest(interface: ModelInterface, cases: Sequence[ValidationCase]) -> str:
    """One digest of everything a version is validated against, recorded when it validates."""
    checks = {"interface": interface.model_dump(mode="json"), "cases": [c.model_dump(mode="json") for c in cases]}
    return str(Digest.of(hashlib.sha256(json.dumps(checks, sort_keys=True).encode())))


def needs_recheck(active: Installed | None, target: Target) -> bool:
    """The site serves the target's bytes, validated against another interface or other cases, or
    against checks it did not record (a state written by an older agent: validated once more, so a
    site that took a changed interface for converged before the upgrade finds out)."""
    return (active is not None and active.digest == target.artifact.digest
            and active.checks != checks_digest(target.interface, target.cases))


def why_deploy(active: Installed | None, target: Target) -> tuple[str, str]:
    """The reason and message of a deploy of ``target`` at a site serving ``active``."""
    version, digest = target.version, target.artifact.digest
    if active is not None and active.digest == digest:
        why = "an older agent validated it without recording against which interface and cases" \
            if active.checks is None else "its interface or validation cases changed in the fleet repo"
        return CHECKS_CHANGED, f"{version}: {why}; the kept blob is validated again, without a download"
    if active is not None and active.version == version:
        return VERSION_REDEFINED, (f"{version} was redefined in the fleet repo: it now pins {digest}, this site "
                                   f"serves {active.digest} under that name; deploying the fleet's bytes (release "
                                   "a new version instead of changing a released one)")
    return NEW_VERSION, f"{active.version if active else 'nothing'} -> {version}"


def same_version_change(before: Target | None, after: Target | None) -> str | None:
    """For a pull request: how the head changes the version a site runs without renaming it
    (``VERSION_REDEFINED`` or ``CHECKS_CHANGED``), or None."""
    if before is None or after is None or before.version != after.version:
        return None
    if before.artifact.digest != after.artifact.digest:
        return VERSION_REDEFINED
    if checks_digest(before.interface, before.cases) != checks_digest(after.interface, after.cases):
        return CHECKS_CHANGED
    return None


def rollback_target(current: DeploymentState | None, installed: Installed) -> Installed | None:
    """What stays the version to go back to once ``installed`` is active: the active one, unless
    ``installed`` is the same version again (redefined or validated again), whose own previous stays."""
    if current is None:
        return None
    active = current.active
    if active is not None and (active.version == installed.version or active.digest == installed.digest):
        return current.previous
    return active
