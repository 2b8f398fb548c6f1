"""oci:// ingest from a registry on loopback: >= 0.9 x the same ingest over plain HTTP.

A 256 MiB layer of random bytes is pushed to Debian's docker-registry (CNCF distribution 2.8, run
on 127.0.0.1 by reconciler.devtools.ociregistry) and the same file is served over HTTP by
bench_ingest's sendfile server in its own process. In turns:
(a) baseline: ArtifactStore.ingest of the http:// URI (the existing path);
(b) subject: ArtifactStore.ingest of oci://REGISTRY/REPO@sha256:… (manifest GET with the Accept
    list, digest check, layer choice, then the same streaming ingest of the blob);
(c) context: the disk alone (the same bytes written from memory with direct I/O, fsync).
Ratio = median(a) / median(b) (higher is better); the second ratio is against (c). Before each turn
the previous blob is deleted and os.sync() settles the disk, outside the timing. Skipped (exit 0,
no JSON line) when docker-registry is not installed.

    .venv/bin/python bench/bench_oci.py [--quick] [--repetitions N]"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

from bench_ingest import _serve, disk_only, write_random_file
from common import Stats, arguments, emit, machine, timed  # first: puts the repo root on sys.path

from reconciler.devtools.ociregistry import EMPTY_CONFIG, OCI_MANIFEST, registry_missing, running_registry
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.manifests.models import Artifact
from reconciler.settings import FetchLimits

TARGET = 0.9
SIZE = 256 << 20


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=7, quick=3)
    if (missing := registry_missing()) is not None:
        print(f"bench_oci: skipped: {missing}")
        sys.exit(0)
    with tempfile.TemporaryDirectory(prefix="bench-oci-") as scratch:
        served = Path(scratch) / "served"
        served.mkdir()
        digest = "sha256:" + write_random_file(served / "model.onnx", SIZE).hex()
        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        server = context.Process(target=_serve, args=(str(served), ports), daemon=True)
        server.start()
        try:
            with running_registry(Path(scratch) / "registry") as registry:
                port = ports.get(timeout=30)
                registry.push_blob("bench/model", b"{}")
                layer = registry.push_blob_file("bench/model", served / "model.onnx", digest)
                manifest = registry.push_manifest("bench/model", "1.0", {
                    "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.cncf.model.manifest.v1+json",
                    "config": EMPTY_CONFIG, "layers": [layer | {"mediaType": "application/vnd.cncf.model.weight.v1.raw"}]})
                limits = FetchLimits(max_bytes=1 << 30, retries=1, oci={"plain_http": [registry.host]})
                http = Artifact(uri=f"http://127.0.0.1:{port}/model.onnx", digest=digest, size=SIZE,
                                signature={"uri": "unused.sig"})
                oci = http.model_copy(update={"uri": f"oci://{registry.host}/bench/model@{manifest}"})
                store = ArtifactStore(Path(scratch) / "state")

                def ingest(artifact: Artifact) -> None:
                    if not store.ingest(artifact, None, limits).fetched:
                        raise RuntimeError("the blob was already in the store")

                def settle() -> None:
                    store.garbage_collect(set())
                    os.sync()

                base, subject, disk = [], [], []
                for turn in range(args.repetitions + 1):  # turn 0 warms up and is not counted
                    settle()
                    b = timed(lambda: ingest(http))
                    settle()
                    s = timed(lambda: ingest(oci))
                    settle()
                    d = timed(lambda: disk_only(Path(scratch) / "disk-baseline"))
                    if turn:
                        base.append(b)
                        subject.append(s)
                        disk.append(d)
        finally:
            server.terminate()
            server.join()

    base_stats, subject_stats, disk_stats = Stats.of(base), Stats.of(subject), Stats.of(disk)
    ratio = base_stats.median / subject_stats.median
    mib = SIZE / (1 << 20)
    print(f"ingest of a {SIZE >> 20} MiB layer from a loopback registry vs the same over HTTP ({machine()})")
    print(f"  baseline  http:// ingest            {base_stats.ms()}  {mib / base_stats.median:.0f} MiB/s")
    print(f"  subject   oci:// ingest             {subject_stats.ms()}  {mib / subject_stats.median:.0f} MiB/s")
    print(f"  context   disk alone (direct, fsync) {disk_stats.ms()}  {mib / disk_stats.median:.0f} MiB/s")
    print(f"  ratio of medians {ratio:.2f} (target >= {TARGET}); vs the disk alone "
          f"{disk_stats.median / subject_stats.median:.2f} (context only)")
    emit("oci", ratio, f"ratio >= {TARGET}", ratio >= TARGET,
         f"{mib / subject_stats.median:.0f} MiB/s vs http {mib / base_stats.median:.0f} MiB/s",
         baseline=base_stats.to_json(), subject=subject_stats.to_json(), disk=disk_stats.to_json(),
         ratio_to_disk=round(disk_stats.median / subject_stats.median, 3))


if __name__ == "__main__":
    main()
