from __future__ import annotations

import re

import pytest
from fleetfactory import deployment, fleet_repo, model, site
from manifest_texts import DIGEST_A, FLAGS, GOOD_REPO, edit, load

from reconciler.manifests import semantics
from reconciler.manifests.findings import place_findings

EXTRA_ARTIFACT = f"uri: b.onnx, digest: {DIGEST_A}, size: 1, signature: {{uri: b.onnx.sig}}"


def findings_of(overrides: dict) -> list:
    result = load(overrides)
    assert result.errors == [], [f.render() for f in result.errors]
    return semantics.check(result.repo)


def test_the_good_repo_has_no_findings() -> None:
    assert findings_of({}) == []


def test_a_version_flag_whose_variants_name_versions_is_fine() -> None:
    assert findings_of(edit("deployments/d.yaml", "version: 1.0.0", "version: {flag: d-version}")) == []


CASES = [
    # id, overrides, path, line, severity, field, message substring
    ("dangling-model", edit("deployments/d.yaml", "model: m", "model: nope"),
     "deployments/d.yaml", 1, "error", "spec.model", "model 'nope' is not defined"),
    ("dangling-version", edit("deployments/d.yaml", "version: 1.0.0", "version: 9.9.9"),
     "deployments/d.yaml", 1, "error", "spec.version", "model 'm' has no version '9.9.9' (versions: 1.0.0, 1.1.0)"),
    ("bad-enabled-flag", edit("deployments/d.yaml", "{flag: d-enabled}", "{flag: nope}"),
     "deployments/d.yaml", 1, "error", "spec.enabled.flag", "flag 'nope' is not defined"),
    ("bad-version-flag", edit("deployments/d.yaml", "version: 1.0.0", "version: {flag: nope}"),
     "deployments/d.yaml", 1, "error", "spec.version.flag", "flag 'nope' is not defined"),
    ("version-flag-variant-not-a-version",
     {**edit("deployments/d.yaml", "version: 1.0.0", "version: {flag: d-version}"),
      "flags/fleet.flagd.json": FLAGS.replace('"next": "1.1.0"', '"next": "2.0.0"')},
     "deployments/d.yaml", 1, "error", "spec.version.flag", "flag 'd-version' has variants that are not versions of model 'm' (versions: 1.0.0, 1.1.0): next='2.0.0'"),
    ("version-flag-variant-not-a-string",
     {**edit("deployments/d.yaml", "version: 1.0.0", "version: {flag: d-enabled}")},
     "deployments/d.yaml", 1, "error", "spec.version.flag", "flag 'd-enabled' has variants that are not versions of model 'm' (versions: 1.0.0, 1.1.0): on=True, off=False"),
    ("enabled-flag-not-boolean", edit("deployments/d.yaml", "{flag: d-enabled}", "{flag: d-version}"),
     "deployments/d.yaml", 1, "error", "spec.enabled.flag", "flag 'd-version' has variants that are not booleans: stable='1.0.0', next='1.1.0'"),
    ("percents-not-rising", edit("deployments/d.yaml", "percent: 100", "percent: 50"),
     "deployments/d.yaml", 1, "error", "spec.rollout.waves[2].percent",
     "wave 'rest' has percent 50, not above the 50 of wave 'half'"),
    ("percents-not-reaching-100", edit("fleet.yaml", "percent: 100", "percent: 90"),
     "fleet.yaml", 1, "error", "spec.defaultRollout.waves[1].percent", "the last wave has percent 90; it must be 100"),
    ("targets-match-nothing", edit("deployments/d.yaml", "{tier: store}", "{tier: factory}"),
     "deployments/d.yaml", 1, "warning", "spec.targets", "selects no site"),
    ("wave-selects-no-targeted-site", edit("deployments/d.yaml", "{region: eu}", "{region: mars}"),
     "deployments/d.yaml", 1, "warning", "spec.rollout.waves[0].selector", "wave 'pilot' selects no targeted site"),
    ("fleet-wave-selects-no-site",
     edit("fleet.yaml", "name: first\n        percent: 10", "name: first\n        selector: {matchLabels: {gpu: 'yes'}}"),
     "fleet.yaml", 1, "warning", "spec.defaultRollout.waves[0].selector", "wave 'first' selects no targeted site"),
    ("same-platform-twice",
     edit("models/m.yaml", "platform: {arch: x86_64}\n",
          f"platform: {{arch: x86_64}}\n        - {{{EXTRA_ARTIFACT}, platform: {{arch: x86_64}}}}\n"),
     "models/m.yaml", 1, "error", "spec.versions[1].artifacts[1].platform", "same platform as artifacts[0] of version '1.1.0'"),
    ("no-platform-twice",
     edit("models/m.yaml", "      validation:\n", f"        - {{{EXTRA_ARTIFACT}}}\n      validation:\n"),
     "models/m.yaml", 1, "error", "spec.versions[0].artifacts[1].platform", "same platform as artifacts[0]"),
    ("duplicate-version", edit("models/m.yaml", "version: 1.1.0", "version: 1.0.0"),
     "models/m.yaml", 1, "error", "spec.versions[1].version", "version '1.0.0' is defined twice"),
    ("validation-unknown-input", edit("models/m.yaml", "inputs: {x: [[1.0, 2.0]]}", "inputs: {x: [[1.0, 2.0]], z: [1]}"),
     "models/m.yaml", 1, "error", "spec.versions[0].validation[0].inputs", "z not a model input (model inputs: x)"),
    ("validation-missing-input", edit("models/m.yaml", "inputs: {x: [[1.0, 2.0]]}", "inputs: {}"),
     "models/m.yaml", 1, "error", "spec.versions[0].validation[0].inputs", "missing model input x"),
    ("validation-unknown-output", edit("models/m.yaml", "expected: {y: [[3.0]]}", "expected: {label: [1]}"),
     "models/m.yaml", 1, "error", "spec.versions[0].validation[0].expected", "label not a model output"),
]


@pytest.mark.parametrize(("overrides", "path", "line", "severity", "field", "message"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cross_document_problems_are_found(overrides, path, line, severity, field, message) -> None:
    findings = findings_of(overrides)
    rendered = [f.render() for f in findings]
    assert [(f.path, f.line, f.severity, f.field) for f in findings] == [(path, line, severity, field)], rendered
    assert message in findings[0].message and findings[0].message.startswith(f"{field}: "), rendered


def test_waves_by_selector_need_not_reach_100_percent() -> None:
    overrides = edit("deployments/d.yaml", "percent: 100", "percent: 80")
    assert findings_of(overrides) == []


def test_sites_with_equal_labels_are_matched_as_one_group_without_losing_the_odd_one() -> None:
    sites = [site(f"s{i}", tier="store", region=f"r{i % 3}") for i in range(3000)] + [site("lab", tier="lab")]
    pilot = {"waves": [{"name": "pilot", "selector": {"matchLabels": {"tier": "lab"}}}, {"name": "all", "percent": 100}]}
    repo = fleet_repo(sites, [model()], [
        deployment("stores", targets={"matchExpressions": [{"key": "region", "operator": "In", "values": ["r2"]}]}),
        deployment("lab", targets={"matchLabels": {"tier": "lab"}}),
        deployment("everywhere", rollout=pilot),
        deployment("nowhere", targets={"matchLabels": {"region": "r3"}}, rollout=pilot),
    ])
    assert [(f.path, f.severity, f.field) for f in semantics.check(repo)] == [
        ("<Deployment nowhere>", "warning", "spec.targets"),
    ]


@pytest.mark.parametrize(("overrides", "path", "field"), [(c[1], c[2], c[5]) for c in CASES], ids=[c[0] for c in CASES])
def test_placed_findings_point_at_the_line_of_their_field(overrides, path, field) -> None:
    """Issue 10: not at the document's first line; at the field itself, or where the nearest
    enclosing field the document writes begins."""
    files = {**GOOD_REPO, **overrides}
    [finding] = place_findings(findings_of(overrides), lambda p: files[p].encode() if p in files else None)
    line = files[path].splitlines()[finding.line - 1]
    assert finding.line > 1 and finding.col > 1, finding.render()
    item = line[: finding.col - 1].strip() == "-"  # a list item that leaves the field out (a default)
    assert item or any(f"{part}:" in line for part in re.findall(r"[A-Za-z]+", field)), (finding.render(), line)


def test_a_placed_finding_names_the_value_at_fault() -> None:
    overrides = edit("deployments/d.yaml", "version: 1.0.0", "version: 9.9.9")
    files = {**GOOD_REPO, **overrides}
    [finding] = place_findings(findings_of(overrides), lambda p: files[p].encode())
    assert (finding.path, finding.line, finding.col) == ("deployments/d.yaml", 7, 12)


@pytest.mark.parametrize(("inputs", "expected", "field", "message"), [
    ("{x: [[1.0, 2.0, 3.0]]}", "{y: [[3.0]]}", "spec.versions[0].validation[0].inputs.x", "has shape [1, 3]"),
    ("{x: [1.0, 2.0]}", "{y: [[3.0]]}", "spec.versions[0].validation[0].inputs.x", "has shape [2]"),
    ("{x: [[1.0, 2.0], [1.0]]}", "{y: [[3.0]]}", "spec.versions[0].validation[0].inputs.x", "not a rectangular array"),
    ("{x: [[1.0, 2.0]]}", "{y: [[3.0, 4.0]]}", "spec.versions[0].validation[0].expected.y", "has shape [1, 2]"),
    ("{x: [[1.0, 2.0]]}", "{y: [[yes]]}", "spec.versions[0].validation[0].expected.y", "not a rectangular array"),
])
def test_validation_cases_have_the_declared_shapes(inputs, expected, field, message) -> None:
    overrides = edit("models/m.yaml", "inputs: {x: [[1.0, 2.0]]}\n          expected: {y: [[3.0]]}",
                     f"inputs: {inputs}\n          expected: {expected}")
    [finding] = findings_of(overrides)
    assert finding.field == field and message in finding.message and "the interface declares" in finding.message


def test_many_rows_of_the_declared_width_are_fine() -> None:
    overrides = edit("models/m.yaml", "inputs: {x: [[1.0, 2.0]]}\n          expected: {y: [[3.0]]}",
                     "inputs: {x: [[1.0, 2.0], [3, 4], [5, 6]]}\n          expected: {y: [[3.0], [7], [11]]}")
    assert findings_of(overrides) == []
