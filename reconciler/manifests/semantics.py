"""Checks across documents that no schema can express: references resolve, versions exist, waves
rise to 100 %, selectors select someone. Pure: a FleetRepo in, findings out.

Findings point at the first line of the document they concern and name the field."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.flags import FlagDefinition
from reconciler.manifests.deployments import Deployment, FlagRef
from reconciler.manifests.findings import field_path
from reconciler.manifests.fleet import Finding, FleetRepo, Origin
from reconciler.manifests.models import Model, Rollout, Selector, Site, TensorSpec
from reconciler.manifests.selectors import matches


def check(repo: FleetRepo) -> list[Finding]:
    sites = _LabelSets(repo.sites.values())
    findings: list[Finding] = []
    if repo.fleet is not None and repo.fleet.spec.defaultRollout is not None:
        report = _Report(origin_of(repo, "Fleet", repo.fleet.metadata.name), findings)
        _check_rollout(repo.fleet.spec.defaultRollout, "spec.defaultRollout", sites, sites.all, report)
    for model in repo.models.values():
        _check_model(model, _Report(origin_of(repo, "Model", model.metadata.name), findings))
    for deployment in repo.deployments.values():
        report = _Report(origin_of(repo, "Deployment", deployment.metadata.name), findings)
        _check_deployment(deployment, repo, sites, report)
    return sorted(findings, key=lambda f: (f.path, f.line, f.col))


@dataclass
class _Report:
    origin: Origin
    findings: list[Finding]

    def __call__(self, at: str, message: str, severity: Literal["error", "warning"] = "error") -> None:
        self.findings.append(Finding(self.origin.path, self.origin.line, 1, f"{at}: {message}", severity, at))


def origin_of(repo: FleetRepo, kind: str, name: str) -> Origin:
    return repo.origins.get((kind, name)) or Origin(f"<{kind} {name}>", 1)


class _LabelSets:
    """Sites grouped by identical labels: a fleet of 10 000 sites has few distinct label sets, so a
    selector is matched against each set once instead of against every site."""

    def __init__(self, sites: Iterable[Site]):
        self._labels = [dict(s) for s in {frozenset(site.metadata.labels.items()) for site in sites}]
        self.all = range(len(self._labels))
        self._memo: dict[str, list[int]] = {}

    def targeted(self, selector: Selector) -> list[int]:
        key = selector.model_dump_json()
        if key not in self._memo:
            self._memo[key] = [i for i in self.all if matches(selector, self._labels[i])]
        return self._memo[key]

    def selects_any(self, selector: Selector, among: Iterable[int]) -> bool:
        return any(matches(selector, self._labels[i]) for i in among)


def _check_deployment(deployment: Deployment, repo: FleetRepo, sites: _LabelSets, report: _Report) -> None:
    spec = deployment.spec
    model = repo.models.get(spec.model)
    if model is None:
        report("spec.model", f"model '{spec.model}' is not defined by any Model document")
    if isinstance(spec.version, str):
        if model is not None and model.spec.version(spec.version) is None:
            report("spec.version", f"model '{spec.model}' has no version '{spec.version}' ({_versions(model)})")
    else:
        flag = _flag(spec.version, "spec.version.flag", repo.flags.flags, report)
        if flag is not None and model is not None:
            wrong = _variants(flag, lambda v: isinstance(v, str) and model.spec.version(v) is not None)
            if wrong:
                report(
                    "spec.version.flag",
                    f"flag '{spec.version.flag}' has variants that are not versions of model '{spec.model}' "
                    f"({_versions(model)}): {wrong}",
                )
    if isinstance(spec.enabled, FlagRef):
        flag = _flag(spec.enabled, "spec.enabled.flag", repo.flags.flags, report)
        wrong = _variants(flag, lambda v: isinstance(v, bool)) if flag else ""
        if wrong:
            report("spec.enabled.flag", f"flag '{spec.enabled.flag}' has variants that are not booleans: {wrong}")
    targeted = sites.targeted(spec.targets)
    if not targeted:
        report("spec.targets", "selects no site", "warning")
    if spec.rollout is not None:
        _check_rollout(spec.rollout, "spec.rollout", sites, targeted, report)
    rollout = spec.rollout or (repo.fleet.spec.defaultRollout if repo.fleet is not None else None)
    if model is not None and rollout is not None and rollout.gate.evaluation is not None:
        _check_evaluation_gate(rollout.gate.evaluation.metric, model, "spec.rollout.gate.evaluation.metric"
                               if spec.rollout is not None else "the Fleet's defaultRollout.gate.evaluation.metric", report)


def _check_evaluation_gate(metric: str, model: Model, at: str, report: _Report) -> None:
    """A gate can only read a metric the sites report: one the Model declares."""
    declared = model.spec.evaluation.metrics if model.spec.evaluation is not None else []
    if metric not in declared:
        report(at, f"metric {metric} is not declared by model '{model.metadata.name}' "
                   f"(spec.evaluation.metrics: {', '.join(declared) or 'none'}); sites would never report it")


def _flag(ref: FlagRef, at: str, flags: Mapping[str, FlagDefinition], report: _Report) -> FlagDefinition | None:
    flag = flags.get(ref.flag)
    if flag is None:
        report(at, f"flag '{ref.flag}' is not defined in any *.flagd.json file")
    return flag


def _variants(flag: FlagDefinition, fits: Callable[[Any], bool]) -> str:
    """The variants that do not fit, as ``name=value, ...``; empty when all fit."""
    return ", ".join(f"{name}={value!r}" for name, value in flag.variants.items() if not fits(value))


def _check_rollout(rollout: Rollout, at: str, sites: _LabelSets, targeted: Iterable[int], report: _Report) -> None:
    percent_waves = [(i, w) for i, w in enumerate(rollout.waves) if w.percent is not None]
    for (_, before), (i, wave) in zip(percent_waves, percent_waves[1:], strict=False):
        if wave.percent <= before.percent:  # type: ignore[operator]
            report(
                f"{at}.waves[{i}].percent",
                f"wave '{wave.name}' has percent {wave.percent}, not above the {before.percent} of wave "
                f"'{before.name}' (percents are cumulative and must rise)",
            )
    last_index, last = percent_waves[-1] if percent_waves else (0, None)
    if len(percent_waves) == len(rollout.waves) and last is not None and last.percent != 100:
        report(f"{at}.waves[{last_index}].percent", f"the last wave has percent {last.percent}; it must be 100 to reach every site")
    targeted = list(targeted)
    for i, wave in enumerate(rollout.waves):
        if wave.selector is not None and targeted and not sites.selects_any(wave.selector, targeted):
            report(f"{at}.waves[{i}].selector", f"wave '{wave.name}' selects no targeted site", "warning")


def _check_model(model: Model, report: _Report) -> None:
    interface = model.spec.interface
    input_names = {t.name for t in interface.inputs}
    output_names = {t.name for t in interface.outputs}
    seen_versions: set[str] = set()
    for i, version in enumerate(model.spec.versions):
        at = f"spec.versions[{i}]"
        if version.version in seen_versions:
            report(f"{at}.version", f"version '{version.version}' is defined twice")
        seen_versions.add(version.version)
        platforms: dict[tuple[str | None, ...], int] = {}
        for j, artifact in enumerate(version.artifacts):
            p = artifact.platform
            key = (p.arch, p.accelerator, p.precision) if p else (None, None, None)
            if key in platforms:
                report(
                    f"{at}.artifacts[{j}].platform",
                    f"same platform as artifacts[{platforms[key]}] of version '{version.version}'; "
                    "a site could not tell which to run",
                )
            platforms.setdefault(key, j)
        for j, case in enumerate(version.validation):
            case_at = f"{at}.validation[{j}]"
            _check_names(f"{case_at}.inputs", set(case.inputs), input_names, "input", report, exact=True)
            _check_names(f"{case_at}.expected", set(case.expected), output_names, "output", report, exact=False)
            _check_shapes(f"{case_at}.inputs", case.inputs, interface.inputs, report)
            _check_shapes(f"{case_at}.expected", case.expected, interface.outputs, report)


def _check_shapes(at: str, values: Mapping[str, Any], specs: list[TensorSpec], report: _Report) -> None:
    """A case's tensors have the rank and the fixed dimensions the interface declares (-1: any size)."""
    for spec in specs:
        if spec.name not in values:
            continue
        shape = _shape_of(values[spec.name])
        field = field_path([spec.name], at)
        declared = f"{spec.shape} (-1: any size)" if -1 in spec.shape else str(spec.shape)
        if shape is None:
            report(field, f"is not a rectangular array of numbers; the interface declares '{spec.name}' as {declared}")
        elif len(shape) != len(spec.shape) or any(want not in (-1, have) for want, have in zip(spec.shape, shape, strict=True)):
            report(field, f"has shape {shape}, but the interface declares '{spec.name}' as {declared}: "
                          "give the case values of that shape, or correct the interface")


def _shape_of(value: Any) -> list[int] | None:
    """The shape of nested lists of scalars; None when ragged or not numbers."""
    if not isinstance(value, list):
        return [] if isinstance(value, int | float) else None
    shapes = [_shape_of(item) for item in value]
    if any(shape is None or shape != shapes[0] for shape in shapes):
        return None
    return [len(value), *(shapes[0] if shapes else [])]


def _check_names(at: str, given: set[str], known: set[str], what: str, report: _Report, *, exact: bool) -> None:
    """Validation cases must feed every model input; they may check only some of the outputs."""
    unknown = sorted(given - known)
    missing = sorted(known - given) if exact else []
    if unknown:
        report(at, f"{', '.join(unknown)} not a model {what} (model {what}s: {', '.join(sorted(known))})")
    if missing:
        report(at, f"missing model {what} {', '.join(missing)}")


def _versions(model: Model) -> str:
    return "versions: " + ", ".join(v.version for v in model.spec.versions)
