"""``reconciler push FILE oci://REGISTRY/REPO:TAG [--key cosign.key]``: publish a model to a
registry as a ModelPack artifact, sign its manifest as cosign does, and print what the Model
document's artifact entry pins (``reconciler.ingest.ocipush``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reconciler.ingest.oci import parse_reference
from reconciler.settings import FetchLimits

DOCKER_CONFIG = Path.home() / ".docker" / "config.json"


def add_subcommands(commands: argparse._SubParsersAction) -> None:
    push = commands.add_parser("push", help="publish a model to an OCI registry (ModelPack), signed in the registry")
    push.add_argument("file", type=Path, help="the ONNX file")
    add_push_arguments(push, "uri", "oci://REGISTRY/REPOSITORY:TAG")
    push.add_argument("--key", type=Path, help="cosign private key: sign the manifest (tag sha256-<hex>.sig)")
    push.add_argument("--file", dest="files", action="append", default=[], metavar="PATH",
                      help="a file the ONNX file loads beside it (external data), relative to the ONNX file's "
                           "directory; each its own layer (repeatable)")
    push.set_defaults(handler=cmd_push)


def add_push_arguments(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """Where to push and how to reach the registry (``push`` and ``add-version --push``)."""
    parser.add_argument(name, help=help)
    parser.add_argument("--docker-config", type=Path, default=DOCKER_CONFIG if DOCKER_CONFIG.is_file() else None,
                        help="docker config.json with the registry's credentials (default: ~/.docker/config.json)")
    parser.add_argument("--plain-http", action="store_true", help="speak http to the registry (a local one)")


def push_limits(uri: str, plain_http: bool, docker_config: Path | None) -> FetchLimits:
    registry = parse_reference(uri).registry
    return FetchLimits(oci={"docker_config": docker_config, "plain_http": [registry] if plain_http else []})


def cmd_push(args: argparse.Namespace) -> int:
    # Imported when used, as the other commands' doors are.
    from reconciler.ingest.ocipush import push_model
    from reconciler.trust.signing import load_signing_key

    key = load_signing_key(args.key) if args.key else None
    pushed = push_model(args.file, args.uri, push_limits(args.uri, args.plain_http, args.docker_config), key,
                        files=args.files)
    print(f"Pushed {args.file} to {pushed.uri} (ModelPack; layer {pushed.digest}, {pushed.size} bytes)")
    for file in pushed.files:
        print(f"  and {file.path} (layer {file.digest}, {file.size} bytes)")
    signature = "{uri: " + pushed.uri + ", format: registry}" if pushed.signature_tag else "<sign it: --key>"
    if pushed.signature_tag:
        print(f"Signed manifest {pushed.manifest} (cosign tag {pushed.signature_tag})")
    files = "".join(f"\n        - {{path: {f.path}, digest: \"{f.digest}\", size: {f.size}}}" for f in pushed.files)
    print("In the Model document's version:\n"
          f"  artifacts:\n    - uri: {pushed.uri}\n      digest: {pushed.digest}\n      size: {pushed.size}\n"
          f"      signature: {signature}" + (f"\n      files:{files}" if files else ""))
    return 0
