"""Loads a fleet repo: YAML manifests and flagd files become validated models plus findings that
name the file, line, column and field of every problem. Pydantic is the one validator; the schemas
in schemas/ are generated from the same models.

Parsing is the expensive part, so each file's result is cached by its content key (a git blob id):
an agent that keeps one DocumentCache re-parses only the files a commit changed. The files a load
does parse are read in one go where their source allows it (``RepoFile.read_many``), parsed with
the cyclic garbage collector paused, and then frozen out of its way (see ``load_tree``)."""

from __future__ import annotations

import gc
import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.flags import FlagDefinition, FlagSet
from reconciler.manifests.documents import FLAG_SUFFIX, KINDS, ParsedFile, parse_file
from reconciler.manifests.fleet import Finding, FleetRepo, Origin

YAML_SUFFIXES = (".yaml", ".yml")
MANIFEST_SUFFIXES = (*YAML_SUFFIXES, FLAG_SUFFIX)


@dataclass(frozen=True, slots=True)  # slots: one object per file for the collector, not two
class RepoFile:
    path: str  # repo-relative, forward slashes
    key: str  # git blob id or content hash: equal keys mean equal content
    read: Callable[[], bytes]  # called only when the cache misses
    # Reads many files of one source at once: keys -> contents. When set, a load reads all its
    # cache misses with one call instead of calling ``read`` per file.
    read_many: Callable[[list[str]], dict[str, bytes]] | None = None


@dataclass
class LoadResult:
    repo: FleetRepo
    findings: list[Finding]
    files: int = 0
    documents: int = 0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


class DocumentCache:
    """Parsed files by path and content key. Keeps what the latest load used, so memory stays
    bounded by one tree while unchanged files are never parsed twice."""

    def __init__(self) -> None:
        self._parsed: dict[str, ParsedFile] = {}  # by content key and path
        self.misses = 0

    def parse_all(self, files: list[RepoFile]) -> list[ParsedFile]:
        """The parts of one load's files, in order: cached ones as they are, the others read (in
        bulk where their source can) and parsed."""
        keys = [f"{f.key}\0{f.path}" for f in files]
        cached = [self._parsed.get(key) for key in keys]
        contents = _read_in_bulk([f for f, part in zip(files, cached, strict=True) if part is None])
        parsed = [part or self._parse(file, contents) for file, part in zip(files, cached, strict=True)]
        self._parsed = dict(zip(keys, parsed, strict=True))
        return parsed

    def _parse(self, file: RepoFile, contents: dict[str, bytes]) -> ParsedFile:
        self.misses += 1
        data = contents.get(file.key)
        return parse_file(file.path, file.read() if data is None else data)


def is_manifest_path(path: str) -> bool:
    """YAML and flagd files, outside hidden directories such as .git/ and .github/."""
    return path.endswith(MANIFEST_SUFFIXES) and "/." not in "/" + path


def load_directory(root: Path, cache: DocumentCache | None = None) -> LoadResult:
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in names:
            path = Path(directory, name).relative_to(root).as_posix()
            if is_manifest_path(path):
                data = Path(directory, name).read_bytes()
                files.append(RepoFile(path, hashlib.sha256(data).hexdigest(), lambda data=data: data))
    return load_tree(files, cache)


def load_tree(files: Iterable[RepoFile], cache: DocumentCache | None = None) -> LoadResult:
    """Loads the manifest files among ``files``, parsing only those ``cache`` lacks.

    The parsed models live as long as the cache, and a large repo has hundreds of thousands of
    them, which the cyclic collector would otherwise walk on every full collection for the rest
    of the process (up to two thirds of a warm agent load, measured). So a load that parsed more than
    a quarter of the tree (the share at which CPython itself finds a full collection worth it)
    ends with ``gc.collect()`` and ``gc.freeze()``, which act on the whole process. Collecting
    first means that no garbage is frozen, and frozen objects are still freed by reference
    counting once the cache drops them (the models hold no reference cycles). What is never
    collected is a reference cycle that was alive at a freeze and dies later: in an agent, only
    the few objects of requests in flight at that instant. Smaller changes leave their objects to
    the collector, which walks them cheaply with the bulk frozen out of its way."""
    cache = cache or DocumentCache()
    selected = sorted((f for f in files if is_manifest_path(f.path)), key=lambda f: f.path)
    misses_before = cache.misses
    with _collector_paused():
        result = _assemble(cache.parse_all(selected))
    if cache.misses - misses_before > len(selected) / 4:
        gc.collect()
        gc.freeze()
    return result


def _read_in_bulk(files: list[RepoFile]) -> dict[str, bytes]:
    """Contents by key of the files whose source reads many at once, one call per source: a
    read per file would wait for the source (a git process) to be scheduled again each time."""
    keys_by_reader: dict[Callable[[list[str]], dict[str, bytes]], list[str]] = defaultdict(list)
    for file in files:
        if file.read_many is not None:
            keys_by_reader[file.read_many].append(file.key)
    contents: dict[str, bytes] = {}
    for read_many, keys in keys_by_reader.items():
        contents.update(read_many(keys))
    return contents


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Parsing allocates objects that nearly all stay alive (the models), so collections during a
    load would only walk the growing cache again and again (a fifth of a cold load, measured).
    Restores only what it changed: overlapping loads in two threads leave the collector on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _assemble(parsed: list[ParsedFile]) -> LoadResult:
    """Joins the files' parts. Runs on every load, so it reuses the parts' objects instead of
    allocating per document: on a large repo, fresh objects would wake the cyclic garbage collector,
    which then walks every cached model."""
    tables: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    origins: dict[tuple[str, str], Origin] = {}
    flags: dict[str, FlagDefinition] = {}
    evaluators: dict[str, Any] = {}
    defined_at: dict[str, str] = {}  # field path of a flag or evaluator -> path:line
    findings: list[Finding] = []
    for part in parsed:
        findings.extend(part.findings)
        for m in part.manifests:
            kind, name = m.ident
            first = origins.get(m.ident)
            if first is not None:
                message = f"{kind} '{name}' is already defined at {first.path}:{first.line}"
            elif kind == "Fleet" and tables["Fleet"]:
                other = origins[("Fleet", next(iter(tables["Fleet"])))]
                message = f"a repo has one Fleet; another is defined at {other.path}:{other.line}"
            else:
                origins[m.ident] = m.origin
                tables[kind][name] = m.model
                continue
            findings.append(Finding(part.path, *m.name_at, f"metadata.name: {message}", field="metadata.name"))
        for table, entries in ((flags, part.flags), (evaluators, part.evaluators)):
            for entry in entries:
                first_at = defined_at.get(entry.field)
                if first_at is None:
                    defined_at[entry.field] = f"{part.path}:{entry.line}"
                    table[entry.key] = entry.value
                else:
                    message = f"{entry.field}: '{entry.key}' is already defined at {first_at}"
                    findings.append(Finding(part.path, entry.line, entry.col, message, field=entry.field))
    fleets = list(tables["Fleet"].values())
    repo = FleetRepo(
        fleet=fleets[0] if fleets else None,
        sites=tables["Site"],
        models=tables["Model"],
        deployments=tables["Deployment"],
        flags=FlagSet(flags=flags, evaluators=evaluators),
        origins=origins,
    )
    return LoadResult(repo, findings, files=len(parsed), documents=sum(p.documents for p in parsed))
