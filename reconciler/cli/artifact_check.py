"""``reconciler validate --artifacts``: before the merge, what every site would check of the
versions the fleet asks for, offline and with the sites' own code: the bytes a URI names (size,
digest, no path escape, a scheme sites fetch, not a Git LFS pointer), the signature against the
trust roots given (``verification.py``), and the model in the same limited child process the
sites validate in (``runtime/validation.py``): it loads from the hashed bytes, finds its external
data only among the artifact's pinned ``files`` (each fetched and checked like the artifact), has no
unknown operators, fits the declared interface and passes the version's cases. A version's
reference profile is fetched, digest- and signature-checked the same way, then read as sites read
it: a reference profile whose features are columns of the model's tensors.

Every finding names the Model's file and the field at fault, with what to do about it."""

from __future__ import annotations

import argparse
import posixpath
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from reconciler import reasons
from reconciler.errors import ReconcilerError, Stalled, UsageError
from reconciler.gitdoor.source import not_committable
from reconciler.ingest.artifacts import ArtifactStore, Ingested
from reconciler.ingest.fetch import RepoRoot
from reconciler.ingest.verification import (
    file_artifact,
    ingest,
    signature_bytes,
    signature_roots,
    verify_signature,
)
from reconciler.manifests.deployments import FlagRef
from reconciler.manifests.findings import field_path
from reconciler.manifests.fleet import Finding, FleetRepo
from reconciler.manifests.models import Artifact, Model, ModelVersion, ReferenceProfile
from reconciler.manifests.semantics import origin_of
from reconciler.monitoring.profile import check_fits
from reconciler.runtime.drift_counter import read_profile
from reconciler.runtime.validation import ModelRefused, run_validation
from reconciler.settings import FetchLimits, ValidationLimits
from reconciler.trust import KeylessIdentity, TrustRoots, load_public_key

VersionKey = tuple[str, str]  # (model, version)

_SIZE = frozenset({reasons.ArtifactSizeMismatch, reasons.ArtifactTooLarge})
_DIGEST = frozenset({reasons.ArtifactDigestMismatch, reasons.DigestInvalid})
_INGEST_HINTS = {
    reasons.ArtifactNotFound: "add the file to the repository (git add, commit) or correct uri",
    reasons.ArtifactPathEscapes: "give a path inside the repository, or file:///... for a file every site has",
    reasons.ArtifactUriInvalid: "correct uri",
    reasons.ArtifactUnreadable: "make the file readable",
}
_SIGN_AGAIN = "sign the file with a key the sites trust (reconciler sign FILE --key KEY writes FILE.sig) and commit it"


@dataclass(frozen=True)
class ArtifactOptions:
    roots: TrustRoots | None = None  # None: signatures are read, not verified (no roots given)
    fetch: bool = False  # http(s) and oci artifacts are downloaded only when asked
    all_versions: bool = False  # every version of every Model, not only those Deployments ask for
    limits: FetchLimits = field(default_factory=FetchLimits)
    validation: ValidationLimits = field(default_factory=ValidationLimits)
    # add-version checks files it has just written, which the user commits next
    uncommitted_ok: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ArtifactOptions:
        """From the options ``add_artifact_arguments`` adds."""
        if not getattr(args, "artifacts", True) and (args.trust_keys or args.identity or args.fetch or args.all_versions):
            raise UsageError("--trust-key, --identity, --fetch and --all-versions go with --artifacts")
        if bool(args.identity) != bool(args.issuer):
            raise UsageError("--identity and --issuer go together")
        keys = tuple(load_public_key(_read_key(path), str(path)) for path in args.trust_keys)
        identities = (KeylessIdentity(args.identity, args.issuer),) if args.identity else ()
        roots = TrustRoots(keys=keys, identities=identities, sigstore_trusted_root=args.trusted_root) \
            if keys or identities else None
        return cls(roots=roots, fetch=args.fetch, all_versions=args.all_versions)


def add_artifact_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-key", dest="trust_keys", action="append", type=Path, default=[], metavar="PUB",
                        help="artifacts: PEM public key the sites trust to sign them (repeatable)")
    parser.add_argument("--identity", metavar="ID", help="artifacts: keyless signer identity the sites trust (with --issuer)")
    parser.add_argument("--issuer", metavar="URL", help="artifacts: OIDC issuer of --identity")
    parser.add_argument("--trusted-root", type=Path, metavar="JSON",
                        help="artifacts, keyless: Sigstore trusted_root.json (default: the public Sigstore root)")
    parser.add_argument("--all-versions", action="store_true", help="artifacts: every version of every Model")
    parser.add_argument("--fetch", action="store_true", help="artifacts: download http(s) and oci ones too")


@dataclass(frozen=True)
class ArtifactReport:
    findings: list[Finding]
    checked: tuple[str, ...]  # "model version" of each version checked


def versions_in_use(repo: FleetRepo) -> set[VersionKey]:
    """The versions Deployments resolve to: literal ones, and every variant of a version flag."""
    wanted = set()
    for deployment in repo.deployments.values():
        model, version = repo.models.get(deployment.spec.model), deployment.spec.version
        if model is None:
            continue
        if isinstance(version, FlagRef):
            flag = repo.flags.flags.get(version.flag)
            candidates = [v for v in flag.variants.values() if isinstance(v, str)] if flag else []
        else:
            candidates = [version]
        wanted |= {(model.metadata.name, v) for v in candidates if model.spec.version(v) is not None}
    return wanted


def check_artifacts(repo: FleetRepo, repo_root: RepoRoot, options: ArtifactOptions,
                    versions: Iterable[VersionKey] | None = None) -> ArtifactReport:
    """The findings of every version in ``versions`` (default: per ``options.all_versions``).
    ``repo_root`` is a working tree (``validate``: files there but not committed are named) or a
    commit's tree read from Git as a site reads it (``plan``)."""
    if versions is None:
        versions = ({(m.metadata.name, v.version) for m in repo.models.values() for v in m.spec.versions}
                    if options.all_versions else versions_in_use(repo))
    versions = sorted(versions)
    paths = [path for m, v in versions for path in _repo_paths(repo.models[m].spec.version(v))]
    uncommitted = not_committable(repo_root, paths) if isinstance(repo_root, Path) and not options.uncommitted_ok else {}
    findings: list[Finding] = []
    for model_name, version_name in versions:
        findings += _VersionCheck(repo, repo.models[model_name], version_name, repo_root, options, uncommitted).run()
    return ArtifactReport(findings, tuple(f"{model} {version}" for model, version in versions))


def _repo_paths(version: ModelVersion) -> list[str]:
    """The repo-relative paths a version's artifacts, profile and signatures name."""
    pinned = [*version.artifacts, *([version.profile] if version.profile else [])]
    uris = [uri for a in pinned for uri in (a.uri, a.signature.uri)]
    uris += [uri for a in version.artifacts for f in a.files
             for uri in (file_artifact(a, f).uri, *([f.signature.uri] if f.signature else []))]
    return [posixpath.normpath(uri) for uri in uris if not urlsplit(uri).scheme]


class _VersionCheck:
    """One version of one Model, each of its artifacts (platform variants) as a site would."""

    def __init__(self, repo: FleetRepo, model: Model, version: str, repo_root: RepoRoot, options: ArtifactOptions,
                 uncommitted: dict[str, str]):
        self.model = model
        self.index = next(i for i, v in enumerate(model.spec.versions) if v.version == version)
        self.version: ModelVersion = model.spec.versions[self.index]
        self.origin = origin_of(repo, "Model", model.metadata.name)
        self.repo_root, self.options, self.uncommitted = repo_root, options, uncommitted
        self.findings: list[Finding] = []

    def run(self) -> list[Finding]:
        for j, artifact in enumerate(self.version.artifacts):
            # Each file into a store of its own, as on a new site: a blob another version
            # already brought would not prove this URI's bytes.
            with tempfile.TemporaryDirectory(prefix="reconciler-check-") as scratch:
                at = f"spec.versions[{self.index}].artifacts[{j}]"
                store = ArtifactStore(Path(scratch))
                ingested = self._verified(at, artifact, store)
                if ingested is not None and (model := self._with_files(at, artifact, ingested, store)) is not None:
                    self._model(at, artifact, model)
        if self.version.profile is not None:
            with tempfile.TemporaryDirectory(prefix="reconciler-check-") as scratch:
                at = f"spec.versions[{self.index}].profile"
                ingested = self._verified(at, self.version.profile, ArtifactStore(Path(scratch)))
                if ingested is not None:
                    self._profile(at, ingested)
        return self.findings

    def _verified(self, at: str, artifact: Artifact | ReferenceProfile, store: ArtifactStore,
                  file_name: str | None = None) -> Ingested | None:
        """The file's bytes, fetched and digest-checked, when its signature holds (or cannot be
        judged without roots); None when a finding says why not. ``file_name``: as ``verify_signature``."""
        scheme = urlsplit(artifact.uri).scheme.lower()
        if scheme in ("http", "https", "oci") and not self.options.fetch:
            self._report(f"{at}.uri", f"not checked: {artifact.uri} is fetched over {scheme}; "
                                      "give --fetch to check it as a site would", "warning")
            return None
        uncommitted = [self._uncommitted(f"{at}.uri", artifact.uri),
                       self._uncommitted(f"{at}.signature.uri", artifact.signature.uri)]
        if any(uncommitted):
            return None
        try:
            ingested = ingest(store, artifact, self.repo_root, self.options.limits)
        except ReconcilerError as error:
            self._ingest_failed(at, artifact, error)
            return None
        return ingested if self._signature(at, artifact, ingested, file_name) else None

    def _with_files(self, at: str, artifact: Artifact, ingested: Ingested, store: ArtifactStore) -> Ingested | None:
        """The model with its files beside it, each checked as a site checks it; None when one is refused."""
        files = {file.path: self._verified(f"{at}.files[{k}]", file_artifact(artifact, file), store, file.path)
                 for k, file in enumerate(artifact.files)}
        checked = {path: file for path, file in files.items() if file is not None}
        return store.materialize(ingested, checked) if len(checked) == len(files) else None

    def _uncommitted(self, at: str, uri: str) -> bool:
        """A file here that a commit would not carry to the sites as it is: reported, not checked."""
        state = self.uncommitted.get(posixpath.normpath(uri)) if not urlsplit(uri).scheme else None
        if state == "untracked":
            self._report(at, f"{uri} is here but not in Git (untracked or ignored), and sites read only what is "
                             "committed: git add it (check .gitignore), then commit")
        elif state == "lfs":
            self._report(at, f"{uri} is stored with Git LFS, so the commit holds a pointer, and sites read only the "
                             f"Git tree: untrack it (git lfs untrack {uri}; git add --renormalize {uri}), or publish "
                             "it over https and point uri there")
        return state is not None

    def _ingest_failed(self, at: str, artifact: Artifact | ReferenceProfile, error: ReconcilerError) -> None:
        if error.reason in _SIZE:
            actual = self._local_size(artifact)
            hint = (f"the file has {actual} bytes: correct size, or uri if it names the wrong file"
                    if actual is not None and actual != artifact.size else "")
            self._report(f"{at}.size", _sentence(error, hint))
        elif error.reason in _DIGEST:
            self._report(f"{at}.digest", _sentence(error, f"if {artifact.uri} is the file you mean to ship, "
                                                          "set digest to its digest and sign it again; "
                                                          "otherwise correct uri"))
        else:
            self._report(f"{at}.uri", _sentence(error, _INGEST_HINTS.get(error.reason, "")))

    def _signature(self, at: str, artifact: Artifact | ReferenceProfile, ingested: Ingested, file_name: str | None) -> bool:
        """Whether the signature holds (or could not be judged without roots)."""
        limits = self.options.limits
        try:
            roots = signature_roots(self.options.roots, self.version.signers) if self.options.roots else None
        except Stalled as error:
            self._report(f"spec.versions[{self.index}].signers", _sentence(error, "name a signer the sites trust"))
            return False
        try:
            if roots is None:
                signature_bytes(artifact, self.repo_root, limits)
                self._report(f"{at}.signature", "signature not verified: no trust root given "
                                                "(--trust-key PUB, or --identity ID --issuer URL)", "warning")
            else:
                verify_signature(ingested, artifact, roots, self.repo_root, limits, file_name=file_name)
            return True
        except ReconcilerError as error:
            if error.reason.startswith("Artifact"):  # the signature file itself could not be read
                self._report(f"{at}.signature.uri", _sentence(error, _SIGN_AGAIN))
            else:
                self._report(f"{at}.signature.uri", f"{artifact.uri} is unsigned by any given root: "
                                                    f"{_sentence(error, _SIGN_AGAIN)}")
            return False

    def _model(self, at: str, artifact: Artifact, ingested: Ingested) -> None:
        limits = self.options.validation
        try:
            run_validation(ingested.path, self.model.spec.interface, self.version.validation,
                           timeout=limits.timeout.total_seconds(), memory_limit=limits.memory_bytes)
        except ModelRefused as refused:
            for problem in refused.problems:
                if problem.case is None:
                    where = field_path(list(problem.at), "spec.interface")
                    hint = "make the interface say what the model has, or ship the model it describes"
                else:
                    where = field_path(list(problem.at), f"spec.versions[{self.index}].validation[{problem.case}]")
                    hint = ("correct the expected value (computed without this model) or the model"
                            if problem.at[:1] == ("expected",) else "give the case inputs the interface's shapes")
                self._report(where, f"{self.version.version} ({artifact.uri}): {problem.message}; {hint}")
        except ReconcilerError as error:
            self._report(f"{at}.uri", _sentence(error, "ship one self-contained ONNX file that onnxruntime loads "
                                                       "with its standard operators, or list its external data in files"))

    def _profile(self, at: str, ingested: Ingested) -> None:
        """As a site refuses it before the version is served: a file that is no reference profile,
        or one reading tensors or columns the model lacks."""
        uri = self.version.profile.uri
        try:
            profile = read_profile(ingested.path)
            check_fits(profile, self.model.spec.interface)
        except ReconcilerError as error:
            hint = ("build it again with reconciler profile (it reads the Model's interface), then sign it"
                    if error.reason == reasons.ProfileInvalid else
                    "build the profile from this version's inputs and outputs, or fix the interface")
            self._report(f"{at}.uri", f"{self.version.version} ({uri}): {_sentence(error, hint)}")
            return
        named = (profile.model, profile.version)
        if named != (self.model.metadata.name, self.version.version):
            self._report(f"{at}.uri", f"{uri} is the profile of {' '.join(named)}, not of "
                                      f"{self.model.metadata.name} {self.version.version}: sites count drift "
                                      "against it all the same; check it is the file you mean", "warning")

    def _local_size(self, artifact: Artifact | ReferenceProfile) -> int | None:
        parts = urlsplit(artifact.uri)
        path = (self.repo_root / artifact.uri if parts.scheme == "" and isinstance(self.repo_root, Path) else
                Path(unquote(parts.path)) if parts.scheme == "file" else None)
        try:
            return path.stat().st_size if path is not None else None
        except OSError:
            return None

    def _report(self, at: str, message: str, severity: str = "error") -> None:
        self.findings.append(Finding(self.origin.path, self.origin.line, 1, f"{at}: {message}", severity, at))


def _sentence(error: ReconcilerError, hint: str) -> str:
    return f"{error.message} ({error.reason}){'; ' + hint if hint else ''}"


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read trust key {path}: {exc.strerror}") from None
