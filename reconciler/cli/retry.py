"""`reconciler rollout retry DEPLOYMENT`: the deliberate, Git-native retry of an aborted rollout. It
bumps the Deployment's ``spec.rollout.attempt`` (part of the rollout's id, so the sites see a new
rollout and the old abort no longer counts) in the working tree and commits that one file; the
user pushes it or opens a pull request, as for any other change to the fleet.

The YAML is edited as text, one line, so comments and layout stay; the result is loaded again and
must differ from the Deployment before in the attempt alone, or nothing is written."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

from reconciler.errors import UsageError
from reconciler.gitdoor.git import in_worktree
from reconciler.manifests.deployments import Deployment
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.loader import load_directory

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z]+):(?P<rest>.*)$")


def add_subcommands(commands: argparse._SubParsersAction) -> None:
    rollout = commands.add_parser("rollout", help="act on a Deployment's rollout")
    actions = rollout.add_subparsers(metavar="ACTION")
    retry = actions.add_parser("retry", help="retry an aborted rollout: a commit that bumps spec.rollout.attempt")
    retry.add_argument("deployment")
    retry.add_argument("--repo", type=Path, default=Path("."), help="the fleet repo's working tree (default: .)")
    retry.set_defaults(handler=cmd_retry)


def cmd_retry(args: argparse.Namespace) -> int:
    path, attempt = bump_attempt(args.repo, args.deployment)
    message = f"Retry the rollout of {args.deployment} (attempt {attempt})"
    _git(args.repo, "add", "--", str(path))
    _git(args.repo, "commit", "--quiet", "-m", message, "--", str(path))
    print(f"{path}: spec.rollout.attempt: {attempt}; committed \"{message}\". Push it (or open a pull request): "
          "the sites then start the rollout afresh.")
    return 0


def bump_attempt(repo: Path, name: str) -> tuple[Path, int]:
    """Raise ``spec.rollout.attempt`` of Deployment ``name`` by one in its file; the file and the new attempt."""
    before = _deployment(repo, name)
    origin = before.origins[("Deployment", name)]
    deployment: Deployment = before.deployments[name]
    rollout = deployment.spec.rollout
    if rollout is None:
        raise UsageError(f"deployment {name!r} has no rollout of its own (it uses the Fleet's defaultRollout): "
                         "copy the rollout into its spec, then retry")
    path = repo / origin.path
    lines = path.read_text().splitlines(keepends=True)
    attempt = rollout.attempt + 1
    path.write_text("".join(_with_attempt(lines, origin.line - 1, attempt, path)))
    after = _deployment(repo, name).deployments[name]
    expected = deployment.spec.model_copy(update={"rollout": rollout.model_copy(update={"attempt": attempt})})
    if after.spec != expected or after.metadata != deployment.metadata:
        path.write_text("".join(lines))
        raise UsageError(f"{path}: could not bump spec.rollout.attempt of {name!r} by editing one line; "
                         f"set `attempt: {attempt}` under its spec.rollout by hand")
    return path, attempt


def _deployment(repo: Path, name: str) -> FleetRepo:
    loaded = load_directory(repo)
    if loaded.errors:
        raise UsageError(f"{repo} does not validate; fix it first (reconciler validate {repo})")
    if name not in loaded.repo.deployments:
        raise UsageError(f"no Deployment named {name!r} in {repo}")
    return loaded.repo


def _with_attempt(lines: list[str], start: int, attempt: int, path: Path) -> list[str]:
    """The document from line ``start`` with ``attempt: N`` set in its block-style spec.rollout."""
    spec = _child(lines, start, -1, "spec", 0)
    rollout = None if spec is None else _child(lines, spec + 1, _indent(lines[spec]), "rollout",
                                               _indent(lines[_first_line(lines, spec + 1)]))
    if rollout is None or _KEY.match(lines[rollout].rstrip("\n"))["rest"].strip():
        raise UsageError(f"{path}: spec.rollout is not a block mapping; set `attempt: {attempt}` under it by hand")
    indent = _indent(lines[_first_line(lines, rollout + 1)])
    existing = _child(lines, rollout + 1, _indent(lines[rollout]), "attempt", indent)
    line = " " * indent + f"attempt: {attempt}\n"
    if existing is not None:
        return [*lines[:existing], line, *lines[existing + 1:]]
    return [*lines[:rollout + 1], line, *lines[rollout + 1:]]


def _first_line(lines: list[str], start: int) -> int:
    """The first line from ``start`` that is neither blank nor a comment."""
    return next(i for i in range(start, len(lines)) if lines[i].strip() and not lines[i].lstrip().startswith("#"))


def _child(lines: list[str], start: int, parent_indent: int, key: str, indent: int) -> int | None:
    """The line of ``key:`` among the children of a mapping whose own line is indented
    ``parent_indent`` (-1: the document's top level), from ``start`` until the mapping ends."""
    for i in range(start, len(lines)):
        text = lines[i].rstrip("\n")
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        if text.startswith("---") or _indent(text) <= parent_indent:
            return None
        match = _KEY.match(text)
        if match and match["key"] == key and len(match["indent"]) == indent:
            return i
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _git(repo: Path, *args: str) -> None:
    try:
        in_worktree(repo, *args)
    except subprocess.CalledProcessError as error:
        raise UsageError(f"git {args[0]} in {repo}: {error.stderr.decode('utf-8', 'replace').strip()}") from None

