"""A model of two files (a small ONNX file and 128 MiB of external data) from a loopback registry:
out of one tar layer, as #PATH members, vs the same two files as two raw layers (`push --file`).

Both are pushed to Debian's docker-registry (CNCF distribution 2.8) on 127.0.0.1. In turns:
(a) baseline: each file from its own raw layer (each byte read once);
(b) subject: each file as a member of one tar layer (KitOps media type, uncompressed). A member is
    streamed out and the rest of the archive read too, to refuse an unsafe entry anywhere in it;
    the largest file goes first, and proves the layer safe, so the ONNX file stops at its member.
Each turn ingests the ONNX file and its file into an empty store and lays out the model's
directory (ArtifactStore.materialize); no signature is checked (the same either way). Ratio =
median(a) / median(b).
Skipped (exit 0, no JSON line) when docker-registry is not installed.

    .venv/bin/python bench/bench_multifile.py [--quick] [--repetitions N]"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import tempfile
from pathlib import Path

from bench_ingest import bare_sha256, write_random_file
from common import Stats, arguments, emit, machine, timed  # first: puts the repo root on sys.path

from reconciler.devtools.ociregistry import (
    EMPTY_CONFIG,
    OCI_MANIFEST,
    digest_of,
    registry_missing,
    running_registry,
)
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.ingest.verification import ingest_files
from reconciler.manifests.models import Artifact
from reconciler.settings import FetchLimits

TARGET = 0.9
SIZE = 128 << 20
REPO = "bench/multi"
WEIGHT = "application/vnd.cncf.model.weight.v1.raw"


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=5, quick=3)
    if (missing := registry_missing()) is not None:
        print(f"bench_multifile: skipped: {missing}")
        sys.exit(0)
    with tempfile.TemporaryDirectory(prefix="bench-multifile-") as scratch:
        root = Path(scratch)
        onnx = os.urandom(4096)
        weights = root / "weights.bin"
        weights_digest = "sha256:" + write_random_file(weights, SIZE).hex()
        archive = root / "model.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo("model/model.onnx")
            info.size = len(onnx)
            tar.addfile(info, io.BytesIO(onnx))
            tar.add(weights, "model/weights.bin")
        with running_registry(root / "registry") as registry:
            registry.push_blob(REPO, b"{}")
            raw = [registry.push_blob(REPO, onnx) | {"mediaType": WEIGHT},
                   registry.push_blob_file(REPO, weights, weights_digest) | {"mediaType": WEIGHT}]
            tar_layer = registry.push_blob_file(REPO, archive, "sha256:" + bare_sha256(archive).hex()) | {
                "mediaType": "application/vnd.kitops.modelkit.model.v1.tar"}
            layered, archived = (registry.push_manifest(REPO, tag, {
                "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": EMPTY_CONFIG,
                "artifactType": "application/vnd.cncf.model.manifest.v1+json", "layers": layers})
                for tag, layers in (("layers", raw), ("tar", [tar_layer])))
            limits = FetchLimits(max_bytes=1 << 30, retries=1, oci={"plain_http": [registry.host]})
            files = [{"path": "weights.bin", "digest": weights_digest, "size": SIZE}]
            by_layers = Artifact(uri=f"oci://{registry.host}/{REPO}@{layered}", digest=digest_of(onnx), size=len(onnx),
                                 signature={"uri": "unused.sig"}, files=files)
            by_members = by_layers.model_copy(update={"uri": f"oci://{registry.host}/{REPO}@{archived}#model/model.onnx"})
            store = ArtifactStore(root / "state")

            def ingest(artifact: Artifact) -> None:  # verified_model's order, without the signatures
                files = ingest_files(store, artifact, None, limits)
                store.materialize(store.ingest(artifact, None, limits), files)

            def settle() -> None:
                store.garbage_collect(set())
                os.sync()

            base, subject = [], []
            for turn in range(args.repetitions + 1):  # turn 0 warms up and is not counted
                settle()
                b = timed(lambda: ingest(by_layers))
                settle()
                s = timed(lambda: ingest(by_members))
                if turn:
                    base.append(b)
                    subject.append(s)

    base_stats, subject_stats = Stats.of(base), Stats.of(subject)
    ratio = base_stats.median / subject_stats.median
    mib = SIZE / (1 << 20)
    print(f"a model of two files ({mib:.0f} MiB of external data) from a loopback registry ({machine()})")
    print(f"  baseline  two raw layers           {base_stats.ms()}  {mib / base_stats.median:.0f} MiB/s")
    print(f"  subject   two members of one tar   {subject_stats.ms()}  {mib / subject_stats.median:.0f} MiB/s")
    print(f"  ratio of medians {ratio:.2f} (target >= {TARGET})")
    emit("multifile", ratio, f"ratio >= {TARGET}", ratio >= TARGET,
         f"tar members {mib / subject_stats.median:.0f} MiB/s vs raw layers {mib / base_stats.median:.0f} MiB/s",
         baseline=base_stats.to_json(), subject=subject_stats.to_json())


if __name__ == "__main__":
    main()
