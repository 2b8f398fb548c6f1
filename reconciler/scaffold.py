"""``reconciler init [DIR]`` and ``reconciler schema [KIND]``.

``init`` writes a fleet repo that validates at once: a Fleet, one Site, the pull-request workflow,
the JSON Schemas (so editors check every file offline, from each file's first-line modeline or
from ``.vscode/settings.json``) and a README of next steps. It never overwrites a file. The schemas
are package data (``reconciler/schemas``), so an installed reconciler has them."""

from __future__ import annotations

import argparse
import json
import re
from importlib import resources
from pathlib import Path

from reconciler.errors import UsageError
from reconciler.manifests.loader import is_manifest_path
from reconciler.manifests.models import API_VERSION
from reconciler.manifests.schema_gen import SCHEMAS, SCHEMAS_DIR

SCHEMA_SUFFIX = ".schema.json"
WORKFLOW = ".github/workflows/pull-request.yml"
# Which files each schema is for, for editors without the modeline (VS Code's yaml.schemas).
EDITOR_GLOBS = {
    "fleet.schema.json": ["fleet.yaml"],
    "site.schema.json": ["sites/*.yaml"],
    "model.schema.json": ["models/*/model.yaml"],
    "deployment.schema.json": ["deployments/*.yaml"],
}


def schema_kinds() -> list[str]:
    return sorted(filename.removesuffix(SCHEMA_SUFFIX) for filename in SCHEMAS)


def schema_text(kind: str) -> str:
    filename = kind.lower() + SCHEMA_SUFFIX
    if filename not in SCHEMAS:
        raise UsageError(f"no schema for {kind!r}; kinds: {', '.join(schema_kinds())}")
    return (SCHEMAS_DIR / filename).read_text(encoding="utf-8")


def scaffold(directory: Path, fleet: str, site: str) -> list[Path]:
    """The files of a new fleet repo in ``directory``; refuses a directory that holds a fleet."""
    for name, value in (("fleet", fleet), ("site", site)):
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value) or len(value) > 63:
            raise UsageError(f"{value!r} is not a {name} name: lower-case letters, digits and '-' (a DNS label)")
    existing = [p for p in directory.rglob("*") if p.is_file()
                and is_manifest_path(p.relative_to(directory).as_posix())] if directory.exists() else []
    if existing:
        raise UsageError(f"{directory} holds fleet files already ({existing[0].relative_to(directory)}, ...); "
                         "init starts a new fleet repo in an empty directory")
    files = {
        "fleet.yaml": _fleet_yaml(fleet),
        f"sites/{site}.yaml": _site_yaml(site),
        "README.md": _template("README.md").format(fleet=fleet, site=site),
        WORKFLOW: _template("pull-request.yml"),
        ".vscode/settings.json": json.dumps({"yaml.schemas": {
            f"./schemas/{schema}": globs for schema, globs in EDITOR_GLOBS.items()}}, indent=2) + "\n",
        **{f"schemas/{filename}": (SCHEMAS_DIR / filename).read_text(encoding="utf-8") for filename in SCHEMAS},
    }
    taken = [name for name in files if (directory / name).exists()]
    if taken:
        raise UsageError(f"refusing to overwrite {', '.join(taken)} in {directory}")
    written = []
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _fleet_yaml(fleet: str) -> str:
    return f"""# yaml-language-server: $schema=schemas/fleet.schema.json
# Fleet-wide settings. A Deployment without its own `rollout` uses defaultRollout; without one
# here, every targeted site moves at once.
apiVersion: {API_VERSION}
kind: Fleet
metadata:
  name: {fleet}
spec:
  pollInterval: 30s   # how often sites look for a new commit
  staleAfter: 10m     # a site silent for longer is reported stale
"""


def _site_yaml(site: str) -> str:
    return f"""# yaml-language-server: $schema=../schemas/site.schema.json
# One file per site. Its name is what the site's agent is started with (`--site {site}`);
# Deployments and rollout waves select sites by their labels.
apiVersion: {API_VERSION}
kind: Site
metadata:
  name: {site}
  labels:
    arch: amd64
spec:
  description: The first site
"""


def _template(name: str) -> str:
    return resources.files("reconciler").joinpath("templates", name).read_text(encoding="utf-8")


# --- commands -------------------------------------------------------------------------------------

def add_subcommands(commands: argparse._SubParsersAction) -> None:
    init = commands.add_parser("init", help="start a fleet repo: Fleet, one Site, schemas, PR workflow, README")
    init.add_argument("directory", nargs="?", type=Path, default=Path("."))
    init.add_argument("--fleet", help="the Fleet's name (default: the directory's name)")
    init.add_argument("--site", default="site-1", help="the first Site's name (default: site-1)")
    init.set_defaults(handler=cmd_init)

    schema = commands.add_parser("schema", help="print the JSON Schema of a kind (list them without KIND)")
    schema.add_argument("kind", nargs="?", help=", ".join(schema_kinds()))
    schema.set_defaults(handler=cmd_schema)


def cmd_init(args: argparse.Namespace) -> int:
    directory = args.directory
    fleet = args.fleet or re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-") or "fleet"
    written = scaffold(directory, fleet, args.site)
    print(f"Fleet repo '{fleet}' written to {directory} ({len(written)} files); next steps in {directory / 'README.md'}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    if args.kind is None:
        print(f"Schemas in {SCHEMAS_DIR}:")
        for kind in schema_kinds():
            print(f"  {kind:<14} {kind}{SCHEMA_SUFFIX}")
        return 0
    print(schema_text(args.kind), end="")
    return 0
