"""`reconciler init` writes a fleet repo that validates at once, with editor support; `reconciler
schema` prints the schemas the package ships."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from reconciler.cli.main import main
from reconciler.devtools.schema_gen import SCHEMAS, SCHEMAS_DIR

PROJECT = Path(__file__).resolve().parents[3]
MODELINE = "# yaml-language-server: $schema="


def test_init_writes_a_fleet_that_validates_with_schemas_editors_find(tmp_path, capsys):
    repo = tmp_path / "Acme Fleet"
    assert main(["init", str(repo), "--site", "store-1"]) == 0
    assert main(["validate", str(repo), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert (report["valid"], report["documents"], report["findings"]) == (True, 2, [])
    for manifest in ("fleet.yaml", "sites/store-1.yaml"):
        path = repo / manifest
        first = path.read_text().splitlines()[0]
        assert first.startswith(MODELINE)
        schema_file = (path.parent / first.removeprefix(MODELINE)).resolve()
        assert schema_file.parent == (repo / "schemas").resolve()
        validator = jsonschema.Draft202012Validator(json.loads(schema_file.read_text()))
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == []
    assert sorted(p.name for p in (repo / "schemas").iterdir()) == sorted(SCHEMAS)
    settings = json.loads((repo / ".vscode" / "settings.json").read_text())
    assert all((repo / schema).is_file() for schema in settings["yaml.schemas"])
    assert yaml.safe_load((repo / "fleet.yaml").read_text())["metadata"]["name"] == "acme-fleet"
    readme = (repo / "README.md").read_text()
    assert "reconciler add-version" in readme and "--site store-1" in readme


def test_init_workflow_is_the_example_fleets(tmp_path):
    """One pull-request workflow: what init writes is what the example fleet runs."""
    repo = tmp_path / "fleet"
    assert main(["init", str(repo)]) == 0
    assert (repo / ".github/workflows/pull-request.yml").read_text() == (
        PROJECT / "example-fleet-repo" / ".github" / "workflows" / "pull-request.yml").read_text()


@pytest.mark.parametrize(("existing", "args", "says"), [
    ({"fleet.yaml": "kind: Fleet\n"}, [], "holds fleet files already"),
    ({"README.md": "mine\n"}, [], "refusing to overwrite README.md"),
    ({}, ["--site", "Store_1"], "is not a site name"),
])
def test_init_refuses_to_overwrite_or_to_write_bad_names(tmp_path, capsys, existing, args, says):
    for name, text in existing.items():
        (tmp_path / name).write_text(text)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["init", str(tmp_path), *args]) == 2
    assert says in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_schema_prints_each_shipped_schema_and_lists_them(capsys):
    assert main(["schema", "Model"]) == 0
    assert capsys.readouterr().out == (SCHEMAS_DIR / "model.schema.json").read_text()
    assert main(["schema"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in SCHEMAS)
    assert main(["schema", "widget"]) == 2
    assert "kinds: deployment, flags, fleet, model, reference-profile, site, status-record" in capsys.readouterr().err
