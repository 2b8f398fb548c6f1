"""Where a batch deployment reads and writes on this site: the fleet repo names its input and
output logically, the site's site.yaml (``batch``) says which local directory each name is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.manifests.batch import BatchSpec
from reconciler.settings import BatchDirectories


@dataclass(frozen=True)
class BatchJob:
    deployment: str
    spec: BatchSpec
    input_dir: Path
    output_dir: Path
    folder: Path  # <state>/batch/<deployment>: ledger, lock, last run, spec


def batch_folder(state_root: Path, deployment: str) -> Path:
    return state_root / "batch" / deployment


def job_for(state_root: Path, directories: BatchDirectories, deployment: str, spec: BatchSpec) -> BatchJob:
    unmapped = [f"{kind} {name!r}" for kind, name, mapping in (("input", spec.input.name, directories.inputs),
                                                                ("output", spec.output, directories.outputs))
                if name not in mapping]
    if unmapped:
        raise Stalled(reasons.BatchDirectoryUnmapped, f"{deployment}: this site's site.yaml maps no directory to "
                                                f"{' nor '.join(unmapped)} (batch.inputs / batch.outputs)")
    return BatchJob(deployment, spec, directories.inputs[spec.input.name], directories.outputs[spec.output],
                    batch_folder(state_root, deployment))
