"""Generates reconciler/schemas/*.json from the pydantic models, so the schemas and the validator
are one source of truth. ``python -m reconciler.devtools.schema_gen`` (``make schemas``) rewrites
them; a test fails when a committed schema differs from what the models generate. They are package
data, so an installed reconciler has them (``reconciler schema``, ``reconciler init``); ``schemas/``
at the project root is a link to them, for the example fleet's modelines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from reconciler.flags import FlagFile
from reconciler.manifests.deployments import Deployment
from reconciler.manifests.models import Fleet, Model, Site
from reconciler.monitoring.profile import Profile
from reconciler.status.record import StatusRecord

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://reconciler.dev/schemas/v1/"
SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"

SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "fleet.schema.json": (Fleet, "reconciler Fleet"),
    "site.schema.json": (Site, "reconciler Site"),
    "model.schema.json": (Model, "reconciler Model"),
    "deployment.schema.json": (Deployment, "reconciler Deployment"),
    "flags.schema.json": (FlagFile, "reconciler flagd flag definitions"),
    "status-record.schema.json": (StatusRecord, "reconciler site status record"),
    "reference-profile.schema.json": (Profile, "reconciler reference profile for drift monitoring"),
}


def render_schemas() -> dict[str, str]:
    return {filename: _render(model, filename, title) for filename, (model, title) in SCHEMAS.items()}


def _render(model: type[BaseModel], filename: str, title: str) -> str:
    schema = model.model_json_schema(mode="validation")
    schema.update({"$schema": SCHEMA_DIALECT, "$id": ID_BASE + filename, "title": title})
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(out_dir: Path = SCHEMAS_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for filename, text in render_schemas().items():
        (out_dir / filename).write_text(text, encoding="utf-8")
        print(f"wrote {out_dir / filename}", file=sys.stderr)


if __name__ == "__main__":
    main()
