"""``reconciler enroll``: a site joins the fleet by pull request (Mender's preauthorisation, FLARE's
request-and-approve, the Git way). On the site, it makes the site's key pair (the private key stays
in the state directory, mode 0600), writes the site's local ``site.yaml``, and prints the Site
document carrying the public key, or writes it into a fleet checkout as ``sites/NAME.yaml``, for a
pull request; merging it is the approval. ``--rotate`` adds a new key and marks the old ones
retiring, a pull request too; removing a key from the Site document revokes it.

Labels are the operator's: given here (or edited in Git later), never reported by the agent."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import LiteralScalarString

from reconciler import trust
from reconciler.errors import ReconcilerError, UsageError
from reconciler.manifests.models import API_VERSION, Site
from reconciler.trust.signing import write_new_file

DEFAULT_STATE = Path("/var/lib/reconciler")
KEYS_DIR = "keys"
SCHEMA_MODELINE = "# yaml-language-server: $schema=../schemas/site.schema.json\n"  # as `reconciler init` writes


def add_subcommands(commands: argparse._SubParsersAction) -> None:
    enroll = commands.add_parser("enroll", help="make this site's key pair and its Site document, for a pull request")
    enroll.add_argument("--site", required=True, help="the site's name (a DNS label), as the fleet will know it")
    enroll.add_argument("--labels", default="", help="k=v,... the site's labels, chosen by the operator")
    enroll.add_argument("--state", type=Path, default=DEFAULT_STATE,
                        help=f"the agent's state directory, where the private key stays (default: {DEFAULT_STATE})")
    enroll.add_argument("--config", type=Path, help="the site.yaml to write (default: STATE/site.yaml)")
    enroll.add_argument("--fleet", type=Path, help="a checkout of the fleet repo: write sites/NAME.yaml there "
                                                   "(default: print the Site document)")
    enroll.add_argument("--repo", help="the fleet repo's URL (default: the --fleet checkout's origin)")
    enroll.add_argument("--branch", help="the fleet repo's branch (default: main)")
    enroll.add_argument("--listen", help="HOST:PORT the agent serves models on")
    enroll.add_argument("--trust-key", dest="trust_keys", action="append", type=Path, default=[],
                        help="a public key that signs the fleet's artifacts (repeatable)")
    enroll.add_argument("--rotate", action="store_true",
                        help="an enrolled site: add a new key and mark the Site document's others retiring")
    enroll.set_defaults(handler=cmd_enroll)


def cmd_enroll(args: argparse.Namespace) -> int:
    """Everything is checked before anything is written; the key is written first, so no
    settings or document ever names a key that is not there."""
    config_path = args.config or args.state / "site.yaml"
    if args.rotate != config_path.exists():
        raise UsageError(f"--rotate: {config_path} does not exist; enroll the site first" if args.rotate
                         else f"{config_path} exists: the site is enrolled; --rotate makes it a new key")
    if args.rotate and (args.labels or not args.fleet):
        raise UsageError("--rotate needs --fleet CHECKOUT and takes no --labels (labels are edited in Git)")
    _check_trust_keys(args.trust_keys)
    site_path = args.fleet / "sites" / f"{args.site}.yaml" if args.fleet else None
    existing = _read_site_document(site_path, args.site) if site_path and site_path.exists() else None
    key = trust.generate_private_key()
    public_pem = trust.public_key_pem(key).decode()
    key_id = trust.load_public_key(public_pem.encode(), "new").key_id[:16]
    key_path = args.state.resolve() / KEYS_DIR / f"status-{key_id}.pem"
    document = site_document(args.site, parse_labels(args.labels), existing, key_id, public_pem, retire_others=args.rotate)
    settings = _load_yaml(config_path.read_text(), config_path) if args.rotate else site_settings(args)
    settings["statusKeys"] = [*settings.get("statusKeys", []), str(key_path)]

    write_private_key(key_path, key)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(_dump(settings))
    text = ("" if existing else SCHEMA_MODELINE) + _dump(document)
    print(f"Private key written to {key_path} (mode 0600; it never leaves this site)", file=sys.stderr)
    print(f"Site settings written to {config_path}", file=sys.stderr)
    if site_path is None:
        print(text, end="")
        print(f"Add this as sites/{args.site}.yaml to the fleet repo in a pull request; merging it enrolls the key.",
              file=sys.stderr)
    else:
        site_path.parent.mkdir(parents=True, exist_ok=True)
        site_path.write_text(text)
        print(f"Site document written to {site_path}: commit it in a pull request; merging it enrolls the key.",
              file=sys.stderr)
    if args.rotate:
        print("Restart the agent: it signs with every key in statusKeys. Once the pull request is merged, a second "
              "one removing the retiring key revokes it.", file=sys.stderr)
    return 0


def write_private_key(path: Path, key) -> None:
    """Unencrypted (the agent runs unattended), mode 0600 in a 0700 folder; never overwrites."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    write_new_file(path, trust.private_key_pem(key), 0o600)


def parse_labels(text: str) -> dict[str, str]:
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise UsageError(f"--labels: {item!r} is not k=v")
        labels[key.strip()] = value.strip()
    return labels


def site_document(site: str, labels: dict[str, str], document: Any | None, key_id: str, public_pem: str,
                  retire_others: bool) -> Any:
    """The Site document with the new key added: a new one, or ``document`` (its comments and
    other fields kept) with the other keys marked retiring on a rotation. Refused unless valid."""
    if document is None:
        if retire_others:
            raise UsageError(f"--rotate: no Site document for {site!r} to rotate the key of")
        document = {"apiVersion": API_VERSION, "kind": "Site", "metadata": {"name": site}}
    if labels:
        document["metadata"]["labels"] = labels
    spec = document.setdefault("spec", {})
    keys = spec.setdefault("statusKeys", [])
    if keys and not retire_others:
        raise UsageError(f"Site {site!r} enrolls keys already; --rotate adds a new one")
    for old in keys:
        old["retiring"] = True
    keys.append({"id": key_id, "publicKey": LiteralScalarString(public_pem)})
    try:
        Site.model_validate(_plain(document))
    except ValidationError as exc:
        raise UsageError(f"the Site document would be invalid: {exc}") from None
    return document


def site_settings(args: argparse.Namespace) -> dict[str, Any]:
    repo = args.repo or (_origin(args.fleet) if args.fleet else None)
    if not repo:
        raise UsageError("enroll needs --repo URL (or --fleet CHECKOUT with an origin) for site.yaml")
    settings: dict[str, Any] = {"site": args.site, "repo": repo, "state": str(args.state.resolve())}
    if args.branch:
        settings["branch"] = args.branch
    if args.listen:
        settings["listen"] = args.listen
    if args.trust_keys:
        settings["trustKeys"] = [str(path.resolve()) for path in args.trust_keys]
    return settings


def _check_trust_keys(paths: list[Path]) -> None:
    """A site.yaml naming a key that is missing or not a public key would only fail when the agent
    starts, on the box, after the pull request: refuse it here, where it was typed."""
    for path in paths:
        try:
            trust.load_public_key(path.read_bytes(), str(path))
        except OSError as exc:
            raise UsageError(f"--trust-key {path}: cannot read it ({exc.strerror})") from None
        except ReconcilerError as exc:
            raise UsageError(f"--trust-key {path}: {exc.message}") from None


def _origin(checkout: Path) -> str | None:
    done = subprocess.run(["git", "-C", str(checkout), "remote", "get-url", "origin"], capture_output=True, text=True)
    return done.stdout.strip() or None if done.returncode == 0 else None


def _read_site_document(path: Path, site: str) -> Any:
    document = _load_yaml(path.read_text(), path)
    if not isinstance(document, dict) or document.get("kind") != "Site" or \
            document.get("metadata", {}).get("name") != site:
        raise UsageError(f"{path} is not the Site document of {site!r}")
    return document


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _load_yaml(text: str, path: Path) -> Any:
    try:
        return _yaml().load(text)
    except YAMLError as exc:
        raise UsageError(f"{path}: not YAML: {exc}") from None


def _dump(value: Any) -> str:
    out = io.StringIO()
    _yaml().dump(value, out)
    return out.getvalue()


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, LiteralScalarString) else value
