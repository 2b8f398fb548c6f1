"""``reconciler init [DIR]`` and ``reconciler schema [KIND]``, and the command line of
``reconciler add-version`` (its work is in add_version.py, imported only when it runs).

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

from reconciler.cli.push import add_push_arguments, push_limits
from reconciler.devtools.schema_gen import SCHEMAS, SCHEMAS_DIR
from reconciler.errors import UsageError
from reconciler.manifests.loader import is_manifest_path
from reconciler.manifests.models import API_VERSION

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
        WORKFLOW: resources.files("reconciler").joinpath("example_fleet", WORKFLOW).read_text(encoding="utf-8"),
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

    add = commands.add_parser("add-version", help="sign a model file and append it as a new version of a Model")
    add.add_argument("model", help="the Model's metadata.name")
    add.add_argument("version", help="the new version's name, e.g. 1.2.0")
    add.add_argument("file", type=Path, help="the ONNX file")
    add.add_argument("--key", required=True, type=Path,
                     help="private signing key (cosign encrypted, password from COSIGN_PASSWORD, or PEM)")
    add.add_argument("--repo", type=Path, default=Path("."), help="the fleet repo's working tree (default: .)")
    add.add_argument("--uri", help="record this http(s)://, file:// or oci:// URI instead of copying FILE into the repo")
    add.add_argument("--cases", type=Path, help="YAML list of validation cases (expected outputs from a reference)")
    add.add_argument("--trust-key", dest="trust_keys", action="append", type=Path, default=[],
                     help="a public key the sites trust: the new signature must verify with it (repeatable)")
    add.add_argument("--signature-format", choices=["cosign", "sigstore-bundle"], default="cosign",
                     help="cosign .sig (default) or a Sigstore bundle")
    add.add_argument("--file", dest="files", action="append", default=[], metavar="PATH",
                     help="a file FILE loads beside it (ONNX external data), relative to FILE's directory; "
                          "released, signed and pinned with it (repeatable)")
    add.add_argument("--new-model", action="store_true",
                     help="create the Model (models/MODEL/model.yaml), its interface read from FILE")
    add_push_arguments(add, "--push", "push FILE to this oci://REGISTRY/REPO:TAG and record the pinned URI")
    add.set_defaults(handler=cmd_add_version)


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


def cmd_add_version(args: argparse.Namespace) -> int:
    # Imported when used: it loads onnxruntime and the site's artifact machinery.
    from reconciler.cli.add_version import Release, add_version

    release = Release(repo=args.repo, model=args.model, version=args.version, file=args.file, key=args.key,
                      uri=args.uri, cases=args.cases, trust_keys=tuple(args.trust_keys),
                      signature_format=args.signature_format, new_model=args.new_model, push=args.push,
                      files=tuple(args.files),
                      push_limits=push_limits(args.push, args.plain_http, args.docker_config) if args.push else None)
    added = add_version(release)
    artifact = added.entry["artifacts"][0]
    print(f"Added {release.model} {release.version}: {artifact['digest']}, {artifact['size']} bytes, "
          f"{len(added.entry.get('validation', []))} validation case(s)")
    for path in added.written:
        print(f"  wrote {path.relative_to(release.repo)}")
    if release.uri:
        beside = f" and {', '.join(release.files)} beside it" if release.files else ""
        print(f"Upload {release.file}{beside} to {release.uri}: sites fetch it from there and check the digest.")
    if not release.cases:
        print("No --cases: sites will check the interface only. Validation cases, with expected outputs from "
              "a reference outside the model, catch far more.")
    print(f"Next: point a Deployment at version {release.version}, then commit and open a pull request.")
    return 0
