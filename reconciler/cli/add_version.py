"""``reconciler add-version MODEL VERSION FILE --key KEY``: a new version of a Model, released the
way a site will check it. The file's digest and size are computed, the file is signed, its
interface is checked against the Model and its validation cases (from ``--cases``, never computed
from the candidate itself) are run in the same limited child process a site uses; only then is the
file copied next to the Model's other versions (or ``--uri`` recorded), the signature written
beside it, and the version appended to the Model's file with its comments and layout kept
(``model_yaml``). The resulting repo is then checked as a site would check it (``check_result``);
if that fails, every file is put back.

Nothing is written while any check can still refuse, and what is written is undone on a late
refusal: a refused add-version leaves the repo as it found it."""

from __future__ import annotations

import difflib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import onnxruntime as ort
import yaml
from pydantic import TypeAdapter, ValidationError

from reconciler import reasons, trust
from reconciler.cli.artifact_check import ArtifactOptions, check_artifacts
from reconciler.cli.model_yaml import append_version, render_block
from reconciler.cli.validate import validate_path
from reconciler.errors import Stalled, UsageError
from reconciler.ingest.ocipush import push_model
from reconciler.ingest.verification import LFS_POINTER_MAX_BYTES, parse_lfs_pointer
from reconciler.manifests.loader import LoadResult, load_directory
from reconciler.manifests.models import (
    MAIN_FILE,
    Model,
    ModelInterface,
    ValidationCase,
    VersionString,
    beside_path,
)
from reconciler.manifests.types import Digest
from reconciler.runtime.validate_child import ORT_DTYPES
from reconciler.runtime.validation import EXTERNAL_DATA_FOLDER, run_validation
from reconciler.settings import FetchLimits
from reconciler.trust.signing import SignResult, load_signing_key, sign_file

SIGNATURE_SUFFIX = {"cosign": ".sig", "sigstore-bundle": ".sigstore.json"}
REMOTE_SCHEMES = ("http", "https", "file", "oci", "oci-layout")  # what a site fetches (reconciler.ingest.sources)


@dataclass(frozen=True)
class Release:
    """What add-version was asked to do, as given on the command line."""

    repo: Path
    model: str
    version: str
    file: Path
    key: Path
    uri: str | None = None
    cases: Path | None = None
    trust_keys: tuple[Path, ...] = ()
    signature_format: str = "cosign"
    new_model: bool = False
    push: str | None = None  # oci://REGISTRY/REPO:TAG: push FILE there and record the pinned URI
    push_limits: FetchLimits | None = None  # how to reach that registry (credentials, plain http)
    files: tuple[str, ...] = ()  # FILE's external data files, relative to its directory


@dataclass(frozen=True)
class Added:
    model_file: Path
    written: tuple[Path, ...]  # every file created or changed, the Model file last
    entry: dict


def add_version(release: Release) -> Added:
    _check_uri(release.uri)
    if release.push and release.uri:
        raise UsageError("--push records the URI it pushes to; give --uri or --push, not both")
    fleet = _loaded_fleet(release.repo)
    model = _model_to_extend(fleet, release)
    _check_version_name(release, model)
    _check_file(release.file)
    beside = {name: _beside(release.file, name) for name in release.files}
    cases = _read_cases(release.cases)
    roots, signed = _signed(release, release.file)
    signed_files = {name: _signed(release, path)[1] for name, path in beside.items()}
    external_data = release.file.parent if beside else None
    interface = model.spec.interface if model else read_interface(release.file, external_data)
    try:
        run_validation(release.file, interface, cases, external_data=external_data)
    except Stalled as exc:
        raise exc.add_context(f"{release.file} as {release.model} {release.version}") from None
    if release.push:  # only a model that passed its cases leaves this machine
        pushed = push_model(release.file, release.push, release.push_limits or FetchLimits(), files=release.files)
        release = replace(release, uri=pushed.uri)
    home = _artifact_home(fleet, model, release)
    signature_path = _signature_path(home, release)
    entry = _version_entry(release, signed, home, signature_path, cases, signed_files)
    model_file = release.repo / (fleet.repo.origins[("Model", release.model)].path if model
                                 else f"models/{release.model}/model.yaml")
    new_text = (append_version(model_file.read_text(encoding="utf-8"), release.model, entry) if model
                else new_model_document(release, interface, entry, model_file))
    writes = ([] if release.uri else [(home, release.file), *((home.parent / n, p) for n, p in beside.items())])
    writes += [(signature_path, _signature_file(signed, release)),
               *((_signature_path(home.parent / n, release), _signature_file(f, release)) for n, f in signed_files.items())]
    written = _write_all(release.repo, [*writes, (model_file.relative_to(release.repo), new_text.encode())],
                         lambda: check_result(release.repo, release.model, release.version, roots))
    return Added(model_file, written, entry)


def check_result(repo: Path, model: str, version: str, roots: trust.TrustRoots) -> None:
    """The repo after the edit, checked as ``validate --artifacts`` checks it, with the code the
    sites run: the fleet validates, and the new version's artifacts stream in with the recorded
    size and digest, carry a signature the roots accept, load, match the interface and pass the
    cases. An artifact recorded by ``--uri`` is uploaded after this command: the sites check it."""
    _, findings = validate_path(repo)
    errors = [f.render() for f in findings if f.severity == "error"]
    if errors:
        raise Stalled(reasons.FleetInvalid, "the fleet would not validate: " + "; ".join(errors))
    report = check_artifacts(load_directory(repo).repo, repo, ArtifactOptions(roots=roots, uncommitted_ok=True), {(model, version)})
    refused = [f.render() for f in report.findings if f.severity == "error"]
    if refused:
        raise Stalled(reasons.ArtifactCheckFailed, f"{model} {version} would be refused by the sites: " + "; ".join(refused))


def read_interface(file: Path, external_data: Path | None = None) -> ModelInterface:
    """A new Model's interface, as the ONNX file declares it (symbolic dimensions become -1)."""
    options = ort.SessionOptions()
    if external_data is not None:
        options.add_session_config_entry(EXTERNAL_DATA_FOLDER, str(external_data))
    try:
        session = ort.InferenceSession(file.read_bytes(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for every way a load fails
        raise Stalled(reasons.ModelLoadFailed, f"{file} does not load as an ONNX model: {exc}") from None

    def specs(args) -> list[dict]:
        unknown = [f"{arg.name} ({arg.type})" for arg in args if arg.type not in ORT_DTYPES]
        if unknown:
            raise Stalled(reasons.ModelInterfaceUnsupported, f"{file}: tensors of unsupported types: {', '.join(unknown)}")
        return [{"name": arg.name, "dtype": ORT_DTYPES[arg.type],
                 "shape": [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape]} for arg in args]

    return ModelInterface.model_validate({"inputs": specs(session.get_inputs()), "outputs": specs(session.get_outputs())})


def new_model_document(release: Release, interface: ModelInterface, entry: dict, model_file: Path) -> str:
    schema = release.repo / "schemas" / "model.schema.json"
    modeline = (f"# yaml-language-server: $schema={os.path.relpath(schema, model_file.parent)}\n"
                if schema.exists() else "")
    document = {"apiVersion": "reconciler/v1", "kind": "Model", "metadata": {"name": release.model},
                "spec": {"interface": interface.model_dump(mode="json"), "versions": [entry]}}
    return (modeline + f"# The interface was read from {release.file.name} by `reconciler add-version "
            "--new-model`: check its names, dtypes and shapes.\n" + render_block(document))


# --- checks, in the order they run ----------------------------------------------------------------

def _check_uri(uri: str | None) -> None:
    if uri is not None and urlsplit(uri).scheme not in REMOTE_SCHEMES:
        raise Stalled(reasons.ArtifactSchemeUnsupported, f"--uri {uri}: sites fetch "
                      f"{', '.join(s + '://' for s in REMOTE_SCHEMES)} only; without --uri the file goes into the repo")


def _loaded_fleet(repo: Path) -> LoadResult:
    if not repo.is_dir():
        raise UsageError(f"{repo} is not a directory (give the fleet repo with --repo)")
    fleet = load_directory(repo)
    if fleet.errors:
        raise Stalled(reasons.FleetInvalid, "fix the fleet first (`reconciler validate`): "
                      + "; ".join(f.render() for f in fleet.errors))
    return fleet


def _model_to_extend(fleet: LoadResult, release: Release) -> Model | None:
    model = fleet.repo.models.get(release.model)
    if release.new_model:
        if model is not None:
            raise Stalled(reasons.ModelExists, f"Model '{release.model}' exists already "
                          f"({fleet.repo.origins[('Model', release.model)].path}); leave out --new-model")
        if (release.repo / "models" / release.model / "model.yaml").exists():
            raise Stalled(reasons.ModelExists, f"models/{release.model}/model.yaml exists already")
        return None
    if model is None:
        close = difflib.get_close_matches(release.model, list(fleet.repo.models), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise Stalled(reasons.UnknownModel, f"no Model named '{release.model}' in {release.repo}; {hint}"
                      "to start a new one, add --new-model (its interface is read from FILE)")
    return model


def _check_version_name(release: Release, model: Model | None) -> None:
    try:
        TypeAdapter(VersionString).validate_python(release.version)
    except ValidationError:
        raise UsageError(f"{release.version!r} is not a version name (letters, digits, '.', '+', '_', '-')") from None
    if model is not None and model.spec.version(release.version) is not None:
        raise Stalled(reasons.VersionExists, f"Model '{release.model}' has a version {release.version} already; "
                                             "a released version never changes: pick a new version name")


def _check_file(file: Path) -> None:
    if not file.is_file():
        raise Stalled(reasons.ArtifactMissing, f"{file} is not a file")
    with file.open("rb") as head:
        start = head.read(LFS_POINTER_MAX_BYTES)
    if parse_lfs_pointer(start) is not None:
        raise Stalled(reasons.ArtifactIsLfsPointer, f"{file} is a Git LFS pointer, not the model: "
                                                    "run `git lfs pull` (or give the real file)")
    if not start:
        raise Stalled(reasons.ArtifactMissing, f"{file} is empty")


def _beside(file: Path, name: str) -> Path:
    """A file ``file`` loads beside it, named as its external data names it."""
    try:
        beside_path(name)
    except ValueError as exc:
        raise UsageError(f"--file {name}: {exc} (relative to {file.parent})") from None
    if name == MAIN_FILE:
        raise UsageError(f"--file {name}: sites give that name to {file.name} itself")
    _check_file(file.parent / name)
    return file.parent / name


def _read_cases(path: Path | None) -> list[ValidationCase]:
    """Validation cases written by people from a reference outside the candidate model."""
    if path is None:
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return TypeAdapter(list[ValidationCase]).validate_python(data)
    except OSError as exc:
        raise Stalled(reasons.CasesUnreadable, f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise Stalled(reasons.CasesInvalid, f"{path} is not YAML: {exc}") from None
    except ValidationError as exc:
        said = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}"
                         for e in exc.errors(include_url=False)[:5])
        raise Stalled(reasons.CasesInvalid, f"{path} must hold a list of validation cases "
                                            f"({{name, inputs, expected, tolerance}}): {said}") from None


def _signed(release: Release, file: Path) -> tuple[trust.TrustRoots, SignResult]:
    """The file's signature, verified at once with the code sites run, against ``--trust-key``
    when given (a key the sites do not trust is refused here, not after the merge)."""
    signed = sign_file(file, load_signing_key(release.key))
    keys = tuple(trust.load_public_key(_read(path), str(path)) for path in release.trust_keys)
    roots = trust.TrustRoots(keys=keys or (trust.TrustedKey(str(release.key), signed.public_key),))
    try:
        trust.verify_artifact_signature(signed.sha256, file.name, _signature_file(signed, release),
                                        release.signature_format, roots)
    except Stalled as exc:
        raise Stalled(reasons.SigningKeyNotTrusted, f"{release.key} signs, but not as the given trust keys expect: "
                                                    f"{exc.message}") from None
    return roots, signed


def _signature_file(signed: SignResult, release: Release) -> bytes:
    return signed.cosign_signature if release.signature_format == "cosign" else signed.bundle


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _artifact_home(fleet: LoadResult, model: Model | None, release: Release) -> PurePosixPath:
    """Repo-relative path for the new file: beside the Model's latest repo-held version, with the
    version's name in place of that version's directory (models/x/1.0.0/model.onnx becomes
    models/x/1.1.0/FILE), else <the Model file's directory>/<version>/FILE."""
    name = release.file.name
    if release.uri and urlsplit(release.uri).scheme not in ("oci", "oci-layout"):  # their paths name no file
        name = PurePosixPath(urlsplit(release.uri).path).name or name
    for version in reversed(model.spec.versions if model else []):
        for artifact in version.artifacts:
            if urlsplit(artifact.uri).scheme:
                continue
            parent = PurePosixPath(artifact.uri).parent
            if parent.name == version.version:
                parent = parent.parent
            return parent / release.version / name
    origin = fleet.repo.origins.get(("Model", release.model))
    base = PurePosixPath(origin.path).parent if origin else PurePosixPath("models", release.model)
    return base / release.version / name


def _signature_path(home: PurePosixPath, release: Release) -> PurePosixPath:
    return home.with_name(home.name + SIGNATURE_SUFFIX[release.signature_format])


def _version_entry(release: Release, signed: SignResult, home: PurePosixPath, signature_path: PurePosixPath,
                   cases: list[ValidationCase], signed_files: dict[str, SignResult]) -> dict:
    artifact = {"uri": release.uri or str(home), "digest": str(Digest.from_hex(signed.sha256.hex())),
                "size": release.file.stat().st_size,
                "signature": {"uri": str(signature_path), "format": release.signature_format}}
    if signed_files:
        artifact["files"] = [{"path": name, "digest": str(Digest.from_hex(f.sha256.hex())), "size": f.file.stat().st_size,
                              "signature": {"uri": str(_signature_path(home.parent / name, release)),
                                            "format": release.signature_format}} for name, f in signed_files.items()]
    entry: dict = {"version": release.version, "artifacts": [artifact]}
    if cases:
        entry["validation"] = [case.model_dump(mode="json") for case in cases]
    return entry


def _write_all(repo: Path, writes: list[tuple[PurePosixPath | Path, bytes | Path]],
               check: Callable[[], None]) -> tuple[Path, ...]:
    """Writes the new files and then the Model file (the last write), runs ``check`` on the
    result, and on any failure puts back what was there."""
    *new_files, _ = writes
    taken = [str(relative) for relative, _ in new_files if (repo / relative).exists()]
    if taken:
        raise Stalled(reasons.ArtifactExists, f"{', '.join(taken)} exist(s) already; remove or pick another version name")
    undo: list[tuple[Path, bytes | None]] = []
    made_dirs: list[Path] = []
    try:
        for relative, content in writes:
            path = repo / relative
            undo.append((path, path.read_bytes() if path.exists() else None))
            made_dirs += reversed([d for d in path.parents if d.is_relative_to(repo) and not d.exists()])
            path.parent.mkdir(parents=True, exist_ok=True)
            _replace(path, content)
        check()
    except BaseException:
        for path, previous in reversed(undo):
            if previous is None:
                path.unlink(missing_ok=True)
            else:
                _replace(path, previous)
        for directory in reversed(made_dirs):
            directory.rmdir()
        raise
    return tuple(repo / relative for relative, _ in writes)


def _replace(path: Path, content: bytes | Path) -> None:
    """``path`` now holds ``content`` (bytes, or a file's bytes copied without reading it whole)."""
    temporary = path.with_name(f".{path.name}.add-version")
    if isinstance(content, Path):
        shutil.copyfile(content, temporary)
    else:
        temporary.write_bytes(content)
    os.replace(temporary, path)
