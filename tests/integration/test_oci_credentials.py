"""docker's credential helpers (``credHelpers``, ``credsStore``) and identity tokens, against Debian's
registry behind htpasswd and behind a token service: the helpers are small executables written by
the tests, speaking the docker-credential-helpers protocol (``get``, the server on stdin, JSON on
stdout). A helper that is missing, fails, hangs or floods is refused with its reason, killed, and
nothing is stored."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.devtools.ociregistry import (
    IDENTITY_TOKEN,
    PASSWORD,
    USER,
    Registry,
    digest_of,
    registry_missing,
    running_registry,
)
from reconciler.errors import ReconcilerError
from reconciler.ingest import ocicredhelper
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.ingest.ociauth import Credentials, registry_credentials
from reconciler.manifests.models import Artifact
from reconciler.settings import FetchLimits

pytestmark = pytest.mark.skipif(registry_missing() is not None, reason=str(registry_missing()))

MODEL = os.urandom(50_000)
REPO = "models/helped"


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("basic"), "htpasswd") as registry:
        registry.push_file(REPO, "1.0", MODEL)
        yield registry


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("token"), "token") as registry:
        registry.push_file(REPO, "1.0", MODEL)
        yield registry


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", f"{path}{os.pathsep}{os.environ['PATH']}")
    return path


def helper(bin_dir: Path, name: str, body: str) -> Path:
    """``docker-credential-<name>``: a shell script that keeps what it read on stdin and its pid."""
    program = bin_dir / f"docker-credential-{name}"
    program.write_text(f'#!/bin/sh\necho $$ > "{bin_dir}/{name}.pid"\n'
                       f'[ "$1" = get ] || exit 3\ncat > "{bin_dir}/{name}.stdin"\n{body}\n')
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


def answering(username: str, secret: str) -> str:
    return f"printf '%s' '{json.dumps({'ServerURL': 'ignored', 'Username': username, 'Secret': secret})}'"


def docker_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def limits(host: str, config: Path) -> FetchLimits:
    return FetchLimits(retries=1, backoff=0.01, oci={"plain_http": [host], "docker_config": config})


def ingest(registry: Registry, config: Path, tmp_path: Path) -> bytes:
    item = Artifact(uri=f"oci://{registry.host}/{REPO}:1.0", digest=digest_of(MODEL), size=len(MODEL),
                    signature={"uri": "model.onnx.sig"})
    store = ArtifactStore(tmp_path / "state")
    return store.ingest(item, None, limits(registry.host, config)).path.read_bytes()


def test_a_credential_helper_for_the_registry(basic_registry: Registry, bin_dir: Path, tmp_path: Path) -> None:
    helper(bin_dir, "fleet", answering(USER, PASSWORD))
    helper(bin_dir, "desktop", "exit 9")  # the store for every other registry: not asked
    config = docker_config(tmp_path, {"credsStore": "desktop", "credHelpers": {basic_registry.host: "fleet"}})
    assert ingest(basic_registry, config, tmp_path) == MODEL
    assert (bin_dir / "fleet.stdin").read_text() == basic_registry.host
    assert not (bin_dir / "desktop.pid").exists()


def test_the_credentials_store_for_every_registry(basic_registry: Registry, bin_dir: Path, tmp_path: Path) -> None:
    helper(bin_dir, "secretservice", answering(USER, PASSWORD))
    assert ingest(basic_registry, docker_config(tmp_path, {"credsStore": "secretservice", "auths": {basic_registry.host: {}}}),
                  tmp_path) == MODEL


def test_an_identity_token_is_traded_at_the_token_service(token_registry: Registry, bin_dir: Path, tmp_path: Path) -> None:
    helper(bin_dir, "fleet", answering("<token>", IDENTITY_TOKEN))
    tokens = token_registry.token_server
    asked = len(tokens.requests)
    assert ingest(token_registry, docker_config(tmp_path, {"credHelpers": {token_registry.host: "fleet"}}), tmp_path) == MODEL
    assert tokens.requests[asked:] == [{"grant_type": ["refresh_token"], "client_id": ["reconciler"],
                                        "refresh_token": [IDENTITY_TOKEN], "service": ["test-registry"],
                                        "scope": [f"repository:{REPO}:pull"]}]


def test_an_identity_token_in_auths_too(token_registry: Registry, tmp_path: Path) -> None:
    config = docker_config(tmp_path, {"auths": {token_registry.host: {"identitytoken": IDENTITY_TOKEN}}})
    assert registry_credentials(token_registry.host, limits(token_registry.host, config), "http") == \
        Credentials(identity_token=IDENTITY_TOKEN)


def test_a_helper_without_credentials_leaves_the_auths_entry(basic_registry: Registry, bin_dir: Path, tmp_path: Path) -> None:
    helper(bin_dir, "empty", "echo 'credentials not found in native keychain'; exit 1")
    pair = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = docker_config(tmp_path, {"credsStore": "empty", "auths": {basic_registry.host: {"auth": pair}}})
    assert ingest(basic_registry, config, tmp_path) == MODEL
    # With nothing anywhere the pull is anonymous, and this registry wants credentials.
    with pytest.raises(ReconcilerError) as caught:
        ingest(basic_registry, docker_config(tmp_path, {"credsStore": "empty"}), tmp_path / "b")
    assert caught.value.reason == "ArtifactAuthMissing"


@pytest.mark.parametrize("name, body, reason, words", [
    ("absent", None, "OciCredentialHelperMissing", "docker-credential-absent is not on PATH"),
    ("../../bin/sh", None, "OciCredentialHelperMissing", "is not a credential helper name"),
    ("failing", "echo 'keychain locked' >&2; exit 4", "OciCredentialHelperFailed", "exited with 4: keychain locked"),
    ("hanging", "exec sleep 60", "OciCredentialHelperFailed", "did not answer within"),
    ("silent-child", 'sleep 60 & echo $! > "$0.child"; echo "{}"', "OciCredentialHelperFailed", "within"),
    ("flooding", "exec cat /dev/zero", "OciCredentialHelperFailed", "more than 65536 bytes"),
    ("not-json", "echo 'Username: fleet'", "OciCredentialHelperFailed", "not its JSON"),
    ("no-secret", answering(USER, ""), "OciCredentialHelperFailed", "not usable text"),
    ("control-characters", answering(USER, "a\nb"), "OciCredentialHelperFailed", "not usable text"),
], ids=lambda value: value if isinstance(value, str) and " " not in value and len(value) < 20 else None)
def test_a_helper_that_cannot_give_credentials_is_refused(bin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          name: str, body: str | None, reason: str, words: str) -> None:
    monkeypatch.setattr(ocicredhelper, "HELPER_SECONDS", 1.0)
    if body is not None:
        helper(bin_dir, name, body)
    config = docker_config(tmp_path, {"credHelpers": {"registry.example.com": name}})
    with pytest.raises(ReconcilerError) as caught:
        registry_credentials("registry.example.com", limits("registry.example.com", config), "https")
    assert (caught.value.reason, words in caught.value.message) == (reason, True), caught.value.message
    for pid_file in (bin_dir / f"{name}.pid", bin_dir / f"docker-credential-{name}.child"):
        if pid_file.exists():  # the helper (or what it started) ran, and is gone
            assert not running(int(pid_file.read_text()))


def running(pid: int) -> bool:
    """Alive after a few seconds' grace, not a zombie left for the init process to reap (a
    helper's orphans are not ours to wait for, so their SIGKILL lands when it lands)."""
    until = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < until:
        time.sleep(0.02)
    return _alive(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
