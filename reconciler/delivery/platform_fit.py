"""PURE: does the artifact the plan picks for a site fit what the site says it runs on? Artifacts
are picked by the site's labels, which live in Git and are chosen by an operator (never
self-reported); the site's inventory (its newest status record) can show a label is wrong: an
``arch: arm64`` site that runs x86_64, an ``accelerator`` site whose onnxruntime has no
accelerator provider. Warnings only: the labels decide, a person fixes them."""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.delivery.plan import Target
from reconciler.status.record import SiteInventory

# What `uname -m` says, in the names labels use (Docker's and Go's).
ARCH_NAMES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386", "i386": "386"}
# Providers every onnxruntime build has, which no accelerator needs.
NOT_ACCELERATORS = frozenset({"CPUExecutionProvider", "AzureExecutionProvider"})


def arch_name(machine: str) -> str:
    return ARCH_NAMES.get(machine, machine)


def platform_warnings(site: str, targets: Iterable[Target], inventory: SiteInventory) -> list[str]:
    """One line per target whose artifact's platform the inventory contradicts."""
    warnings = []
    accelerator_providers = sorted(set(inventory.executionProviders) - NOT_ACCELERATORS)
    for target in targets:
        platform = target.artifact.platform
        if platform is None:
            continue
        artifact = f"{target.deployment} gets the artifact of {target.model} {target.version} for"
        if platform.arch is not None and arch_name(platform.arch) != arch_name(inventory.arch):
            warnings.append(f"{site}: {artifact} arch {platform.arch}, but the site says it runs "
                            f"{inventory.arch}: check its arch label")
        if platform.accelerator is not None and not accelerator_providers:
            warnings.append(f"{site}: {artifact} accelerator {platform.accelerator}, but the site's onnxruntime "
                            f"{inventory.onnxruntime} has no accelerator provider "
                            f"({', '.join(inventory.executionProviders) or 'none'}): check its accelerator "
                            f"label, or its onnxruntime build")
    return warnings
