"""Kubernetes label-selector semantics: all of matchLabels and all of matchExpressions hold."""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.manifests.models import Requirement, Selector


def requirement_holds(requirement: Requirement, labels: Mapping[str, str]) -> bool:
    present = requirement.key in labels
    match requirement.operator:
        case "In":
            return present and labels[requirement.key] in requirement.values
        case "NotIn":
            return not present or labels[requirement.key] not in requirement.values
        case "Exists":
            return present
        case "DoesNotExist":
            return not present


def matches(selector: Selector, labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.matchLabels.items()) and all(
        requirement_holds(r, labels) for r in selector.matchExpressions
    )
