"""Bad input is refused with a reason, never with a traceback: generated bundles, signatures, keys,
site.yaml files and manifests either pass or end in a typed error (Stalled, UsageError) or a
finding. Any other exception a library raises on them fails here. Example counts stay modest so
the file runs in seconds; hypothesis keeps every failure it finds in its example database."""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import shutil
import tempfile
import types as pytypes
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from reconciler import trust
from reconciler.agent.config import load_site_config
from reconciler.delivery.model import SiteState
from reconciler.delivery.plan import plan_site
from reconciler.devtools.trust_fixtures import (
    IDENTITY,
    ISSUER,
    LocalSigstore,
    attest_statement,
    dsse_bundle,
    message_bundle,
)
from reconciler.errors import ReconcilerError, UsageError
from reconciler.flags import FlagFile
from reconciler.manifests import semantics
from reconciler.manifests.documents import KINDS, parse_file
from reconciler.manifests.loader import RepoFile, load_tree
from reconciler.manifests.models import API_VERSION
from reconciler.settings import SiteConfig
from reconciler.trust import KeylessIdentity, TrustRoots
from reconciler.trust.signing import decrypt_private_key

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BLOB = b"model bytes"
DIGEST = hashlib.sha256(BLOB).digest()
NAME = "model.onnx"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

# --- values -------------------------------------------------------------------------------------

PLAUSIBLE = st.sampled_from(["30s", "1.0.0", "main", "sha256:" + "ab" * 32, "store-01", "127.0.0.1:8080", "", "-",
                             "SHA2_256", "https://x.example/a", "models/m.onnx", "true", "0", "*"])
SCALARS = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=12) \
    | PLAUSIBLE | st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode())
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=8)


def shaped_like(model: type[BaseModel], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Mappings with some of ``model``'s fields (nested models followed a few levels), each with a
    value of roughly the right shape or of any other: what people get wrong in real files."""
    fields = {field.alias or name: _value_for(field.annotation, depth) for name, field in model.model_fields.items()}
    return st.fixed_dictionaries({}, optional=fields)


def _value_for(annotation: Any, depth: int) -> st.SearchStrategy[Any]:
    nested = _models_in(annotation)
    if not nested or depth >= 3:
        return JSON
    shapes = [shaped_like(model, depth + 1) for model in nested]
    return st.one_of(JSON, *shapes, st.lists(st.one_of(*shapes), max_size=2),
                     st.dictionaries(PLAUSIBLE, st.one_of(*shapes), max_size=2))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, pytypes.UnionType) or get_args(annotation):
        return [model for arg in get_args(annotation) for model in _models_in(arg)]
    return []


def mutated(document: Any) -> st.SearchStrategy[Any]:
    """``document`` with one part replaced by another value, or removed."""
    paths = list(_paths(document))

    @st.composite
    def mutate(draw: st.DrawFn) -> Any:
        changed = copy.deepcopy(document)
        path = draw(st.sampled_from(paths))
        *parents, last = path
        container = functools.reduce(lambda node, key: node[key], parents, changed)
        if draw(st.booleans()) and isinstance(container, dict):
            del container[last]
        else:
            container[last] = draw(JSON)
        return changed

    return mutate()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Any:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


# --- bundles, signatures, keys --------------------------------------------------------------------

@functools.cache
def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="reconciler-fuzz-"))


@pytest.fixture(scope="module", autouse=True)
def _scratch_removed():
    yield
    if scratch.cache_info().currsize:
        shutil.rmtree(scratch(), ignore_errors=True)
        for cached in (scratch, signed):
            cached.cache_clear()


@functools.cache
def signed() -> dict[str, Any]:
    """Valid bundles of every kind the site accepts, and the roots that trust them."""
    key = trust.generate_private_key()
    sigstore = LocalSigstore()
    root = scratch() / "trusted_root.json"
    return {
        "roots": TrustRoots(keys=(trust.load_public_key(trust.public_key_pem(key), "k.pub"),),
                            identities=(KeylessIdentity(IDENTITY, ISSUER),),
                            sigstore_trusted_root=sigstore.write_trusted_root(root)),
        "message": message_bundle(key, BLOB),
        "dsse": dsse_bundle(key, attest_statement({NAME: BLOB})),
        "keyless": sigstore.sign_blob(BLOB),
        "keyless-dsse": sigstore.sign_statement(attest_statement({NAME: BLOB})),
        "cosign": trust.sign_digest(key, DIGEST),
    }


def verdict(signature_file: bytes, signature_format: Any = None) -> None:
    try:
        trust.verify_artifact_signature(DIGEST, NAME, signature_file, signature_format, signed()["roots"])
    except ReconcilerError:
        pass  # refused with a reason


@FUZZ
@given(st.sampled_from(["message", "dsse", "keyless", "keyless-dsse"]), st.data())
def test_a_damaged_bundle_is_refused_with_a_reason(kind, data):
    bundle = data.draw(mutated(signed()[kind]))
    verdict(json.dumps(bundle).encode(), data.draw(st.sampled_from([None, "sigstore-bundle", "model-signing"])))


@FUZZ
@given(st.sampled_from(["keyless", "keyless-dsse"]), st.lists(st.binary(max_size=64), min_size=1, max_size=2))
def test_a_keyless_bundle_with_unreadable_timestamps_is_refused(kind, responses):
    bundle = copy.deepcopy(signed()[kind])
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    entry.pop("inclusionPromise")  # then sigstore reads the timestamps while parsing the bundle
    bundle["verificationMaterial"]["timestampVerificationData"] = {
        "rfc3161Timestamps": [{"signedTimestamp": base64.b64encode(r).decode()} for r in responses]}
    verdict(json.dumps(bundle).encode())


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | st.binary(max_size=90).map(base64.b64encode))
def test_any_signature_file_is_refused_or_verified(signature_file):
    for signature_format in (None, "cosign", "sigstore-bundle", "model-signing"):
        verdict(signature_file, signature_format)


@FUZZ
@given(st.data())
def test_a_damaged_trusted_root_is_refused_with_a_reason(data):
    from reconciler.trust.keyless import sigstore_verifier

    path = signed()["roots"].sigstore_trusted_root.with_name("damaged_root.json")
    path.write_text(json.dumps(data.draw(mutated(json.loads(signed()["roots"].sigstore_trusted_root.read_text())))))
    try:
        sigstore_verifier.__wrapped__(path)  # the uncached loader: one root per example
    except ReconcilerError:
        pass


PEM_LABELS = ["PUBLIC KEY", "PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY", "ENCRYPTED SIGSTORE PRIVATE KEY"]


@FUZZ
@given(st.sampled_from(PEM_LABELS), st.binary(max_size=160) | st.text(max_size=160).map(str.encode))
def test_any_key_file_is_refused_or_read(label, body):
    armored = f"-----BEGIN {label}-----\n{base64.b64encode(body).decode()}\n-----END {label}-----\n".encode()
    for pem in (body, armored):
        for load in (lambda data: trust.load_public_key(data, "k.pub"), trust.load_private_key,
                     lambda data: decrypt_private_key(data, b"password")):
            try:
                load(pem)
            except ReconcilerError:
                pass


# --- site.yaml ------------------------------------------------------------------------------------

def site_verdict(text: str) -> None:
    site_file = scratch() / "site.yaml"
    site_file.write_text(text)
    try:
        config = load_site_config(site_file, {})
    except UsageError as refused:
        assert str(refused).strip()
    else:
        assert config.listen is None or 0 <= config.listen.port <= 65535  # parsed on load


@FUZZ
@given(shaped_like(SiteConfig))
def test_any_site_yaml_is_refused_with_a_reason_or_loaded(settings_):
    site_verdict(yaml.safe_dump(settings_, allow_unicode=True))


@FUZZ
@given(st.text(max_size=200) | st.sampled_from(["site: [a\n", "- a\n", "a: &x [*x]\n", "!!python/object:os.system {}\n",
                                                 "site: !!int x\n", "\ufeffsite: s\n", "{{{{{{{{{{\n"]))
def test_any_text_as_site_yaml_is_refused_or_loaded(text):
    site_verdict(text)


# --- manifests ------------------------------------------------------------------------------------

MANIFESTS = st.sampled_from(sorted(KINDS)).flatmap(
    lambda kind: shaped_like(KINDS[kind]).map(lambda doc: {**doc, "apiVersion": API_VERSION, "kind": kind}))


@FUZZ
@given(st.lists(MANIFESTS, min_size=1, max_size=4), shaped_like(FlagFile))
def test_any_manifests_become_a_fleet_or_findings_and_a_plan(documents, flag_file):
    texts = [yaml.safe_dump(doc, allow_unicode=True).encode() for doc in documents]
    files = [RepoFile(f"m{i}.yaml", str(i), lambda text=text: text) for i, text in enumerate(texts)]
    flags = json.dumps(flag_file).encode()
    loaded = load_tree([*files, RepoFile("flags/f.flagd.json", "flags", lambda: flags)])
    assert all(f.message and f.line >= 1 for f in loaded.findings)
    if loaded.errors:
        return
    assert all(f.message for f in semantics.check(loaded.repo))  # what `validate` adds
    for site in loaded.repo.sites:  # and what an agent does with a fleet that loads
        plan_site(loaded.repo, site, SiteState(site=site), NOW, "c0ffee")


@FUZZ
@given(st.sampled_from(["a.yaml", "flags/a.flagd.json"]), st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_as_a_manifest_become_findings(path, data):
    parsed = parse_file(path, data)
    assert all(f.message for f in parsed.findings)


@functools.cache
def example_fleet() -> tuple[list[dict[str, Any]], list[RepoFile]]:
    """The example fleet's documents, and its flag files as they are."""
    root = Path(__file__).resolve().parents[2] / "example-fleet-repo"
    documents = [doc for path in sorted(root.rglob("*.yaml")) if ".github" not in path.parts
                 for doc in yaml.safe_load_all(path.read_text()) if doc]
    flags = [RepoFile(path.relative_to(root).as_posix(), path.name, path.read_bytes)
             for path in sorted(root.rglob("*.flagd.json"))]
    return documents, flags


@FUZZ
@given(st.data())
def test_a_damaged_example_fleet_becomes_findings_or_a_plan(data):
    documents, flags = example_fleet()
    index = data.draw(st.integers(0, len(documents) - 1))
    damaged = [data.draw(mutated(doc)) if i == index else doc for i, doc in enumerate(documents)]
    texts = [yaml.safe_dump(doc, allow_unicode=True).encode() for doc in damaged]
    loaded = load_tree([*(RepoFile(f"d{i}.yaml", str(i), lambda text=text: text) for i, text in enumerate(texts)),
                        *flags])
    if loaded.errors:
        return
    assert all(f.message for f in semantics.check(loaded.repo))
    for site in loaded.repo.sites:
        plan_site(loaded.repo, site, SiteState(site=site), NOW, "c0ffee")
