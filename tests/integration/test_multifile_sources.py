"""A model with external data from each kind of URI a site fetches beside the ONNX file
(repo-relative, file://, http:// from a real server on loopback): every file pinned and checked
by one model_signing bundle, laid out in the model's directory, and loaded there by the validation
child with the right weights; a file of other bytes, or one the bundle does not list, is refused
and leaves no directory behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from reconciler.devtools.ociregistry import digest_of
from reconciler.devtools.onnx_builder import dense_model, dense_reference, split_external_data
from reconciler.devtools.trust_fixtures import (
    dsse_bundle,
    encode,
    model_signing_hint,
    model_signing_statement,
)
from reconciler.errors import ReconcilerError
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.ingest.verification import verified_model
from reconciler.manifests.models import Artifact, ModelInterface, ValidationCase
from reconciler.runtime.registry import ModelRegistry
from reconciler.runtime.validation import run_validation
from reconciler.settings import FetchLimits
from reconciler.trust import TrustRoots, generate_private_key, load_public_key, public_key_pem

KEY = generate_private_key()
ROOTS = TrustRoots(keys=(load_public_key(public_key_pem(KEY), "release.pub"),))
LAYERS = [(np.linspace(-1, 1, 8, dtype=np.float32).reshape(4, 2), np.array([0.25, -0.25], np.float32), "tanh")]
MAIN, FILES = split_external_data(dense_model(LAYERS), "weights/w.bin")
X = [[0.1, -0.2, 0.3, 0.4]]
INTERFACE = ModelInterface(inputs=[{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
                           outputs=[{"name": "output", "dtype": "float32", "shape": [-1, 2]}])
CASE = ValidationCase(name="weights", inputs={"input": X}, expected={"output": dense_reference(LAYERS, np.array(X)).tolist()})


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def published(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The model's directory (in a repository at ``tmp_path/repo``) and its http:// URL."""
    directory = tmp_path / "repo" / "models" / "m" / "1.0"
    (directory / "weights").mkdir(parents=True)
    (directory / "model.onnx").write_bytes(MAIN)
    (directory / "weights" / "w.bin").write_bytes(FILES["weights/w.bin"])
    sign(directory, KEY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(tmp_path / "repo")))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield directory, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def sign(directory: Path, key, files: dict[str, bytes] = FILES) -> None:
    statement = model_signing_statement({"model.onnx": MAIN, **files})
    (directory / "model.sig.json").write_bytes(encode(dsse_bundle(key, statement, hint=model_signing_hint(key))))


def artifact(uri: str, signature: str, weights: bytes = FILES["weights/w.bin"]) -> Artifact:
    return Artifact(uri=uri, digest=digest_of(MAIN), size=len(MAIN),
                    signature={"uri": signature, "format": "model-signing"},
                    files=[{"path": "weights/w.bin", "digest": digest_of(weights), "size": len(weights)}])


def uris(directory: Path, http: str) -> dict[str, tuple[str, str]]:
    return {"repo": ("models/m/1.0/model.onnx", "models/m/1.0/model.sig.json"),
            "file": (f"file://{directory}/model.onnx", f"file://{directory}/model.sig.json"),
            "http": (f"{http}/models/m/1.0/model.onnx", f"{http}/models/m/1.0/model.sig.json")}


@pytest.mark.parametrize("kind", ["repo", "file", "http"])
def test_a_model_with_external_data_beside_it_is_fetched_checked_and_loads(published, tmp_path: Path, kind: str) -> None:
    directory, http = published
    store = ArtifactStore(tmp_path / "state")

    got = verified_model(store, artifact(*uris(directory, http)[kind]), None, ROOTS, tmp_path / "repo", FetchLimits(retries=1))

    assert (got.path.parent / "weights" / "w.bin").read_bytes() == FILES["weights/w.bin"]
    assert run_validation(got.path, INTERFACE, [CASE]).cases[0].passed
    served = ModelRegistry()  # and the runtime, from where a restarted agent finds it by digest
    served.activate("m", "m", "1.0", store.model_path(got.digest), INTERFACE, digest=got.digest)
    answer = served.get("m", None).session.run(None, {"input": np.array(X, dtype=np.float32)})[0]
    assert np.allclose(answer, CASE.expected["output"], atol=1e-5)


@pytest.mark.parametrize("kind", ["repo", "http"])
def test_a_file_of_other_bytes_or_that_the_bundle_does_not_list_is_refused(published, tmp_path: Path, kind: str) -> None:
    directory, http = published
    uri, signature = uris(directory, http)[kind]
    store = ArtifactStore(tmp_path / "state")
    with pytest.raises(ReconcilerError) as other_bytes:
        verified_model(store, artifact(uri, signature, weights=b"\0" * len(FILES["weights/w.bin"])), None, ROOTS,
                       tmp_path / "repo", FetchLimits(retries=1))
    sign(directory, KEY, files={})
    with pytest.raises(ReconcilerError) as unlisted:
        verified_model(store, artifact(uri, signature), None, ROOTS, tmp_path / "repo", FetchLimits(retries=1))

    assert other_bytes.value.reason == "ArtifactDigestMismatch" and "weights/w.bin" in other_bytes.value.message
    assert unlisted.value.reason == "StatementMissingFile" and "does not list weights/w.bin" in unlisted.value.message
    assert not store.models.exists() or list(store.models.iterdir()) == []
