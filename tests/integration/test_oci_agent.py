"""A site whose next version lives in an OCI registry (Debian's docker-registry on 127.0.0.1): each
bad input is refused with its reason in the status record while the last good version keeps
serving, and a good oci:// version, signed by cosign in the registry, is served.
One real agent, a real git smart-HTTP remote, real onnxruntime, real signatures."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from oci_cosign import sign_legacy
from test_bad_inputs import DEPLOYMENT_FILE, SITE, V11, served_forecast
from test_oci_archives import tar

from reconciler.agent.wiring import build_agent
from reconciler.cli.artifact_check import ArtifactOptions, check_artifacts
from reconciler.devtools.ociregistry import (
    EMPTY_CONFIG,
    OCI_MANIFEST,
    Registry,
    registry_missing,
    running_registry,
)
from reconciler.devtools.testing import EXAMPLE, FleetRemote, copy_example, git, start_fleet_remote
from reconciler.manifests.loader import load_directory
from reconciler.runtime.registry import ModelRegistry
from reconciler.settings import FetchLimits, SiteConfig
from reconciler.trust import TrustRoots, load_private_key, load_public_key

pytestmark = pytest.mark.skipif(registry_missing() is not None, reason=str(registry_missing()))

REPO = "models/demand-forecast"


def v11(fleet: FleetRemote, **fields: object) -> None:
    """1.1.0 rolled out, its artifact changed by ``fields``."""
    fleet.bump(DEPLOYMENT_FILE, "1.0.0", "1.1.0")
    doc = fleet.model_doc("demand-forecast")
    version = next(v for v in doc["spec"]["versions"] if v["version"] == "1.1.0")
    version["artifacts"][0].update(fields)
    fleet.write_model_doc("demand-forecast", doc)


def model_bytes(fleet: FleetRemote) -> bytes:
    return (fleet.clone / V11).read_bytes()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pushers(registry: Registry):
    def put_manifest(reference: str | None, manifest: dict, media_type: str) -> str:
        return registry.push_manifest(REPO, reference, manifest, media_type)
    return (lambda data: registry.push_blob(REPO, data)), put_manifest


def wrong_digest(fleet: FleetRemote, registry: Registry) -> None:
    manifest = registry.push_file(REPO, "1.1.0", model_bytes(fleet))
    v11(fleet, uri=f"oci://{registry.host}/{REPO}@{manifest}", digest=digest_of(b"other"))


def another_artifacts_manifest(fleet: FleetRemote, registry: Registry) -> None:
    other = registry.push_file(REPO, "other", b"not the forecast model")
    v11(fleet, uri=f"oci://{registry.host}/{REPO}@{other}")


def tag_moved(fleet: FleetRemote, registry: Registry) -> None:
    registry.push_file(REPO, "moving", b"something pushed over the tag later")
    v11(fleet, uri=f"oci://{registry.host}/{REPO}:moving")


def layer_too_large(fleet: FleetRemote, registry: Registry) -> None:
    registry.push_file(REPO, "1.1.0", model_bytes(fleet))
    v11(fleet, uri=f"oci://{registry.host}/{REPO}:1.1.0", size=len(model_bytes(fleet)) - 1)


def tar_with_dot_dot(fleet: FleetRemote, registry: Registry) -> None:
    registry.push_blob(REPO, b"{}")
    archive = tar(("model.onnx", "file", model_bytes(fleet)), ("../../etc/cron.d/evil", "file", b"* * * * * root sh\n"))
    layer = registry.push_blob(REPO, archive) | {"mediaType": "application/vnd.kitops.modelkit.model.v1.tar+gzip"}
    registry.push_manifest(REPO, "kit", {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": EMPTY_CONFIG,
                                         "artifactType": "application/vnd.kitops.modelkit.manifest.v1+json",
                                         "layers": [layer]})
    v11(fleet, uri=f"oci://{registry.host}/{REPO}:kit#model.onnx")


def signature_of_another_manifest(fleet: FleetRemote, registry: Registry) -> None:
    manifest = registry.push_file(REPO, "1.1.0", model_bytes(fleet))
    other = registry.push_file(REPO, "other", b"not the forecast model")
    key = load_private_key((EXAMPLE / "keys" / "demo.key").read_bytes())
    sign_legacy(*pushers(registry), key, f"{registry.host}/{REPO}", manifest, payload_digest=other)
    uri = f"oci://{registry.host}/{REPO}@{manifest}"
    v11(fleet, uri=uri, signature={"uri": uri, "format": "registry"})


BAD = [
    ("wrong digest", wrong_digest, "OciLayerNotFound", "has no layer"),
    ("manifest of another artifact", another_artifacts_manifest, "OciLayerNotFound", "another artifact's"),
    ("tag moved", tag_moved, "OciLayerNotFound", "or the tag moved"),
    ("layer too large", layer_too_large, "ArtifactTooLarge", "the Model document says"),
    ("tar with ../", tar_with_dot_dot, "OciArchiveUnsafe", "leaves the archive"),
    ("signature of another manifest", signature_of_another_manifest, "SignatureManifestMismatch", "signs manifest"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("oci-agent")
    with running_registry(root / "registry") as oci:
        fleet = start_fleet_remote(root)
        models = ModelRegistry()
        config = SiteConfig(site=SITE, repo=fleet.url, state=root / "state", interval="1s",
                            trust_keys=[EXAMPLE / "keys" / "demo.pub"], fetch={"oci": {"plainHttp": [oci.host]}},
                            validation={"timeout": "8s", "memoryBytes": 1 << 30})
        agent = build_agent(config, models)
        agent.start()
        good = git("rev-parse", "HEAD", cwd=fleet.clone).strip()
        assert agent.reconcile_once().record.state == "success"
        try:
            yield fleet, oci, agent, models, good
        finally:
            agent.stop()
            fleet.server.stop()


@pytest.mark.parametrize("mutate,reason,needle", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_oci_input_is_refused_and_the_last_good_version_serves(
        world, mutate: Callable[[FleetRemote, Registry], None], reason: str, needle: str) -> None:
    fleet, oci, agent, models, good = world
    before = served_forecast(models)
    fleet.reset_to(good)
    mutate(fleet, oci)
    fleet.push(f"bad oci input: {reason}", force=True)

    status = agent.reconcile_once().record.deployments["demand-forecast"]

    assert status.reason.startswith(reason) and status.state in ("failure", "error"), status
    assert needle in status.message
    assert status.activeVersion == "1.0.0"
    assert served_forecast(models) == before and before[0] == "1.0.0"


def test_a_good_oci_version_signed_in_the_registry_is_served(world) -> None:
    fleet, oci, agent, models, good = world
    fleet.reset_to(good)
    manifest = oci.push_file(REPO, "1.1.0", model_bytes(fleet))
    key = load_private_key((EXAMPLE / "keys" / "demo.key").read_bytes())
    sign_legacy(*pushers(oci), key, f"{oci.host}/{REPO}", manifest)
    v11(fleet, uri=f"oci://{oci.host}/{REPO}:1.1.0",
        signature={"uri": f"oci://{oci.host}/{REPO}@{manifest}", "format": "registry"})
    fleet.push("1.1.0 from the registry, signed there", force=True)

    status = agent.reconcile_once().record.deployments["demand-forecast"]

    assert (status.state, status.activeVersion) == ("success", "1.1.0"), status
    assert served_forecast(models)[0] == "1.1.0"


def test_validate_artifacts_fetch_checks_oci_artifacts_as_a_site_would(tmp_path) -> None:
    fleet = copy_example(tmp_path / "fleet")
    with running_registry(tmp_path / "registry") as oci:
        data = (fleet / V11).read_bytes()
        oci.push_file(REPO, "1.1.0", data)
        oci.push_file(REPO, "other", b"not the forecast model")
        roots = TrustRoots(keys=(load_public_key((EXAMPLE / "keys" / "demo.pub").read_bytes(), "demo.pub"),))
        limits = FetchLimits(retries=1, oci={"plain_http": [oci.host]})

        def findings(tag: str, fetch: bool = True) -> list[str]:
            path = fleet / "models" / "demand-forecast" / "model.yaml"
            text = path.read_text()
            path.write_text(text.replace(f"uri: {V11}\n", f"uri: oci://{oci.host}/{REPO}:{tag}\n"))
            try:
                options = ArtifactOptions(roots=roots, fetch=fetch, all_versions=True, limits=limits)
                report = check_artifacts(load_directory(fleet).repo, fleet, options, {("demand-forecast", "1.1.0")})
                return [f"{f.severity}: {f.message}" for f in report.findings]
            finally:
                path.write_text(text)

        assert findings("1.1.0") == []
        assert [f for f in findings("1.1.0", fetch=False) if "give --fetch" in f and f.startswith("warning")]
        assert any("OciLayerNotFound" in f or "has no layer" in f for f in findings("other"))
