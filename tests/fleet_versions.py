"""New versions of the example fleet's demand-forecast model, signed with the demo key, for tests
that need a version with particular bytes: a large one from an artifact server, one onnxruntime
warns about."""

from __future__ import annotations

import hashlib

from reconciler.devtools.testing import EXAMPLE, FleetRemote
from reconciler.trust.signing import load_signing_key, sign_file

DEPLOYMENT = "demand-forecast"


def publish_version(fleet: FleetRemote, version: str, body: bytes, uri: str | None = None) -> str:
    """``version`` of demand-forecast with 1.0.0's validation cases (``body`` must answer as 1.0.0
    does), deployed in a new commit; its bytes in the repo, or at ``uri`` (only the signature is
    committed then). Returns the commit."""
    relative = f"models/{DEPLOYMENT}/{version}/model.onnx"
    path = fleet.clone / relative
    path.parent.mkdir()
    path.write_bytes(body)
    signature = sign_file(path, load_signing_key(EXAMPLE / "keys" / "demo.key"))
    path.with_suffix(".onnx.sig").write_bytes(signature.cosign_signature)
    if uri is not None:
        path.unlink()
    doc = fleet.model_doc(DEPLOYMENT)
    first = doc["spec"]["versions"][0]
    doc["spec"]["versions"].append({
        "version": version,
        "artifacts": [{"uri": uri or relative, "digest": "sha256:" + hashlib.sha256(body).hexdigest(), "size": len(body),
                       "signature": {"uri": f"{relative}.sig", "format": "cosign"}}],
        "validation": first["validation"],
    })
    fleet.write_model_doc(DEPLOYMENT, doc)
    fleet.bump(f"deployments/{DEPLOYMENT}.yaml", first["version"], version)
    return fleet.push(f"{DEPLOYMENT} {version}")
