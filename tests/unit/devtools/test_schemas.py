from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from manifest_texts import DIGEST_A, GOOD_REPO

from reconciler.devtools.schema_gen import SCHEMAS, SCHEMAS_DIR, render_schemas
from reconciler.flags import FlagFile
from reconciler.manifests.documents import KINDS
from reconciler.manifests.loader import is_manifest_path
from reconciler.manifests.yamlreader import YamlLoader

EXAMPLE = Path(__file__).resolve().parents[3] / "example-fleet-repo"
KIND_SCHEMA = {"Fleet": "fleet.schema.json", "Site": "site.schema.json", "Model": "model.schema.json",
               "Deployment": "deployment.schema.json"}


@functools.cache
def validator(filename: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS_DIR / filename).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("filename", sorted(SCHEMAS))
def test_committed_schemas_are_what_the_models_generate(filename: str) -> None:
    committed = SCHEMAS_DIR / filename
    assert committed.exists(), f"{committed} is missing: run `make schemas`"
    assert committed.read_text() == render_schemas()[filename], f"{committed} is stale: run `make schemas`"


def test_schemas_name_themselves() -> None:
    schema = json.loads((SCHEMAS_DIR / "deployment.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://reconciler.dev/schemas/v1/deployment.schema.json"
    assert sorted(p.name for p in SCHEMAS_DIR.glob("*.json")) == sorted(SCHEMAS)


def example_documents() -> list[tuple[str, dict]]:
    documents = []
    for path in sorted(p for p in EXAMPLE.rglob("*.y*ml") if is_manifest_path(p.relative_to(EXAMPLE).as_posix())):
        text = path.read_text()
        documents += [(f"{path.relative_to(EXAMPLE)}", d) for d in yaml.load_all(text, Loader=YamlLoader) if d]
    return documents


def test_every_document_of_the_example_fleet_repo_fits_its_schema() -> None:
    documents = example_documents()
    if not documents:
        pytest.skip("example-fleet-repo has no YAML yet")
    for where, document in documents:
        errors = [e.message for e in validator(KIND_SCHEMA[document["kind"]]).iter_errors(document)]
        assert errors == [], where
    for path in EXAMPLE.rglob("*.flagd.json"):
        assert list(validator("flags.schema.json").iter_errors(json.loads(path.read_text()))) == [], path


def good(kind_file: str) -> dict:
    return next(yaml.load_all(GOOD_REPO[kind_file], Loader=YamlLoader))


def with_change(document: dict, dotted: str, value: object) -> dict:
    """A deep copy of ``document`` with one value set (or removed, for ...) at a dotted path."""
    copy = json.loads(json.dumps(document))
    *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    target = copy
    for part in parents:
        target = target[part]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return copy


BAD_DOCUMENTS = [
    ("bad-digest", "models/m.yaml", "spec.versions.0.artifacts.0.digest", "sha256:" + "A" * 64),
    ("missing-size", "models/m.yaml", "spec.versions.0.artifacts.0.size", ...),
    ("extra-field", "models/m.yaml", "spec.versions.0.artifacts.0.sha", DIGEST_A),
    ("wrong-type", "deployments/d.yaml", "spec.targets", ["tier=store"]),
    ("bad-name", "deployments/d.yaml", "metadata.name", "Demand_Forecast"),
    ("percent-out-of-range", "deployments/d.yaml", "spec.rollout.waves.2.percent", 101),
    ("bad-duration", "fleet.yaml", "spec.pollInterval", "soon"),
    ("bad-api-version", "fleet.yaml", "apiVersion", "reconciler/v2"),
    ("bad-clock", "sites/stores.yaml", "spec.maintenanceWindows.0.start", "25:00"),
]


@pytest.mark.parametrize(("file", "dotted", "value"), [c[1:] for c in BAD_DOCUMENTS], ids=[c[0] for c in BAD_DOCUMENTS])
def test_schema_and_models_refuse_the_same_bad_documents(file: str, dotted: str, value: object) -> None:
    document = good(file)
    model = KINDS[document["kind"]]
    schema = validator(KIND_SCHEMA[document["kind"]])
    model.model_validate(document)
    assert schema.is_valid(document)
    bad = with_change(document, dotted, value)
    with pytest.raises(ValueError):
        model.model_validate(bad)
    assert not schema.is_valid(bad)


def test_flag_schema_refuses_what_flag_file_refuses() -> None:
    good_flags = json.loads(GOOD_REPO["flags/fleet.flagd.json"])
    schema = validator("flags.schema.json")
    assert schema.is_valid(good_flags)
    FlagFile.model_validate(good_flags)
    bad = with_change(good_flags, "flags.d-enabled.state", "ON")
    assert not schema.is_valid(bad)
    with pytest.raises(ValueError):
        FlagFile.model_validate(bad)


def _manifest_models() -> list[type]:
    """Every pydantic model reachable from the four kinds."""
    from pydantic import BaseModel

    seen: list[type] = []
    pending = list(KINDS.values())
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            stack = [field.annotation]
            while stack:
                tp = stack.pop()
                if isinstance(tp, type) and issubclass(tp, BaseModel):
                    pending.append(tp)
                stack += list(getattr(tp, "__args__", ()))
    return seen


@pytest.mark.parametrize("model", _manifest_models(), ids=lambda m: m.__name__)
def test_every_manifest_field_says_what_it_is_for(model: type) -> None:
    undocumented = [name for name, field in model.model_fields.items() if not (field.description or "").strip()]
    assert undocumented == [], f"{model.__name__}: give these fields Field(description=...)"


@pytest.mark.parametrize("filename", ["fleet.schema.json", "site.schema.json", "model.schema.json",
                                      "deployment.schema.json"])
def test_schemas_carry_the_descriptions_to_editors(filename: str) -> None:
    schema = json.loads((SCHEMAS_DIR / filename).read_text())
    objects = [schema, *schema.get("$defs", {}).values()]
    missing = [f"{o.get('title')}.{name}" for o in objects for name, prop in o.get("properties", {}).items()
               if not prop.get("description")]
    assert missing == []
    assert "sha256" in schema_property(json.loads((SCHEMAS_DIR / "model.schema.json").read_text()),
                                       "Artifact", "digest")["description"]


def schema_property(schema: dict, definition: str, name: str) -> dict:
    return schema["$defs"][definition]["properties"][name]


def test_schemas_ship_inside_the_package() -> None:
    from importlib import resources

    shipped = resources.files("reconciler").joinpath("schemas")
    assert sorted(entry.name for entry in shipped.iterdir() if entry.name.endswith(".json")) == sorted(SCHEMAS)
    assert SCHEMAS_DIR == Path(str(shipped))


def test_the_wheel_takes_the_schemas_and_templates_along() -> None:
    """What pyproject.toml names as package data covers every shipped file (checked by hand on a
    built wheel: `pip wheel --no-deps .` lists reconciler/schemas/*.json and reconciler/templates/*)."""
    import tomllib

    package = Path(__file__).resolve().parents[3] / "reconciler"
    patterns = tomllib.loads((package.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    covered = {p for pattern in patterns["reconciler"] for p in package.glob(pattern)}
    shipped = {*SCHEMAS_DIR.glob("*.json"), *(package / "templates").iterdir()}
    assert shipped and shipped <= covered
