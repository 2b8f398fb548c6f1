"""Build the example fleet's models: ONNX files, their signatures and models/<name>/model.yaml.

    python scripts/build_example_fleet.py [REPO_DIR]     (default: example-fleet-repo/)

Deterministic: weights come from numpy's default_rng with a fixed seed per (model, version), so
every run writes the same .onnx bytes and the same model.yaml. Expected validation outputs are
computed with numpy, independently of onnxruntime. A version may ship several artifacts, one per
platform (fp32 for amd64 servers, int8 for arm64 edge boxes); its validation cases hold for every
one of them, with a tolerance its least precise artifact meets. ECDSA signatures are randomized,
so a .sig is rewritten only when it no longer verifies with keys/demo.pub; the demo key pair is
created only when keys/demo.key is missing."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler import trust
from reconciler.devtools.onnx_builder import (
    dense_model,
    dense_reference,
    quantized_dense_model,
    quantized_dense_reference,
)
from reconciler.errors import Stalled

DEFAULT_REPO = Path(__file__).resolve().parents[1] / "example-fleet-repo"
# A version's validation tolerance is that of its least precise artifact. fp32 artifacts meet the
# numpy reference to float rounding. Per-column int8 weights move defect-detector 2.0.0's
# probabilities by up to 8.2e-4 on its validation cases (the script writes the measured value into
# model.yaml and refuses to build when a variant uses more than half its tolerance).
TOLERANCE = {"fp32": 1e-4, "int8": 2e-3}
TOLERANCE_MARGIN = 2
# Rounding the expected outputs to 6 decimals keeps model.yaml readable, far inside TOLERANCE.
EXPECTED_DECIMALS = 6
NOISE = 0.3  # scale of the seeded weights next to the designed signal

Layers = list[tuple[np.ndarray, np.ndarray, str | None]]


@dataclass(frozen=True)
class Variant:
    """One artifact of a version: the platform it is for (None: any site) and how its weights are stored."""

    platform: tuple[tuple[str, str], ...] | None  # (label, value) pairs, matched against the site's labels
    precision: str  # "fp32" or "int8"
    file_name: str  # next to the version's other artifacts

    @property
    def tolerance(self) -> float:
        return TOLERANCE[self.precision]


GENERIC = (Variant(platform=None, precision="fp32", file_name="model.onnx"),)
# amd64 servers run the fp32 network; arm64 edge boxes the int8 one (a quarter of the weight bytes).
# The platforms name the arch only: a `precision` field would have to match a site label of that
# name, and no site carries one.
PER_ARCH = (
    Variant(platform=(("arch", "amd64"),), precision="fp32", file_name="model.onnx"),
    Variant(platform=(("arch", "arm64"),), precision="int8", file_name="model-int8.onnx"),
)


@dataclass(frozen=True)
class VersionSpec:
    version: str
    seed: int  # the noise of this version's "training run"
    hidden: tuple[int, ...]  # widths of the ReLU hidden layers; () is a single linear layer
    gain: float  # how strongly this version follows the model's signal
    variants: tuple[Variant, ...] = GENERIC

    @property
    def tolerance(self) -> float:
        return max(variant.tolerance for variant in self.variants)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    team: str
    input_name: str
    output_name: str
    signal: tuple[float, ...]  # per input: what the feature means for the output, shared by all versions
    readout: tuple[float, ...]  # per output: how the signal enters it
    output_bias: tuple[float, ...]  # per output: puts outputs in the range people expect
    output_activation: str | None
    versions: tuple[VersionSpec, ...]
    cases: tuple[tuple[str, list[list[float]]], ...]  # (name, input rows), run against every version

    @property
    def n_in(self) -> int:
        return len(self.signal)

    @property
    def n_out(self) -> int:
        return len(self.readout)


MODELS = (
    ModelSpec(
        name="demand-forecast",
        description=(
            "Next-day unit demand per SKU for stores. Features: normalized sales of the last 7 days, "
            "price index, promotion flag, holiday flag."
        ),
        team="merchandising",
        input_name="features",
        output_name="forecast",
        signal=(6.0, -8.0, 4.0, 2.5),
        readout=(1.0,),
        output_bias=(28.0,),  # units per day
        output_activation=None,
        versions=(
            VersionSpec("1.0.0", seed=1_000, hidden=(), gain=1.0),
            VersionSpec("1.1.0", seed=1_100, hidden=(8,), gain=1.3),
        ),
        cases=(
            ("regular-weekday", [[0.8, 1.0, 0.0, 0.0]]),
            ("promotion-and-holiday", [[1.2, 0.85, 1.0, 1.0], [0.3, 1.1, 0.0, 1.0]]),
        ),
    ),
    ModelSpec(
        name="defect-detector",
        description=(
            "Surface-defect classifier for factory line cameras: 16 image statistics in, "
            "probabilities of [ok, defect] out."
        ),
        team="quality",
        input_name="pixels",
        output_name="probabilities",
        signal=(-0.4, -0.4, -0.4, 1.2) * 4,  # every fourth statistic is an edge response
        readout=(-0.5, 0.5),
        output_bias=(0.5, -0.5),  # defects are rare
        output_activation="softmax",
        versions=(
            VersionSpec("1.0.0", seed=2_000, hidden=(8,), gain=1.0),
            VersionSpec("2.0.0", seed=2_200, hidden=(16, 8), gain=1.6, variants=PER_ARCH),
        ),
        cases=(
            ("clean-surface", [[0.3, 0.2, 0.1, 0.0] * 4]),
            ("scratched-surface", [[-0.2, -0.2, -0.2, 1.0] * 3 + [-0.2, 0.6, 0.9, -0.2]]),
        ),
    ),
    ModelSpec(
        name="fraud-score",
        description=(
            "Probability that a card-present transaction is fraudulent. Features: amount z-score, "
            "hour of day (scaled), card age, merchant risk, velocity 1h/24h, foreign card, manual entry."
        ),
        team="payments-risk",
        input_name="transaction",
        output_name="score",
        signal=(0.35, -0.15, -0.3, 0.6, 0.25, 0.15, 0.4, 0.5),
        readout=(1.0,),
        output_bias=(-2.5,),  # fraud is rare: most scores sit well below 0.5
        output_activation="sigmoid",
        versions=(
            VersionSpec("3.2.0", seed=3_200, hidden=(), gain=1.0),
            VersionSpec("3.3.0", seed=3_300, hidden=(6,), gain=1.25),
        ),
        cases=(
            ("foreign-card-evening", [[0.5, 0.8, 0.0, 0.4, 1.0, 0.5, 1.0, 0.0]]),
            ("suspicious-burst", [[3.5, 0.1, -1.0, 0.9, 4.0, 3.0, 1.0, 1.0]]),
        ),
    ),
)


# --- models ---------------------------------------------------------------------------------

def layers_for(model: ModelSpec, version: VersionSpec) -> Layers:
    """The model's designed signal (what the features mean) plus seeded noise (what one training
    run happened to learn). Through hidden ReLU layers the signal rides in two extra units as its
    positive and negative parts, since relu(z) - relu(-z) = z."""
    rng = np.random.default_rng(version.seed)
    widths = [model.n_in, *version.hidden, model.n_out]
    noise = [
        (rng.normal(0.0, NOISE / np.sqrt(fan_in), size=(fan_in, fan_out)), rng.normal(0.0, 0.1, size=fan_out))
        for fan_in, fan_out in pairwise(widths)
    ]
    signal = version.gain * np.asarray(model.signal)[:, None]
    readout = np.asarray(model.readout)[None, :]
    output_bias = np.asarray(model.output_bias)
    if not version.hidden:
        [(weights, bias)] = noise
        layers = [(weights + signal @ readout, bias + output_bias, model.output_activation)]
    else:
        (first_w, first_b), *middle, (last_w, last_b) = noise
        layers = [(np.hstack([first_w, signal, -signal]), np.append(first_b, [0.0, 0.0]), "relu")]
        layers += [(_with_pass_through(w), np.append(b, [0.0, 0.0]), "relu") for w, b in middle]
        layers.append((np.vstack([last_w, readout, -readout]), last_b + output_bias, model.output_activation))
    return [(w.astype(np.float32), b.astype(np.float32), activation) for w, b, activation in layers]


def _with_pass_through(weights: np.ndarray) -> np.ndarray:
    """``weights`` plus two units that copy the signal's two units unchanged."""
    fan_in, fan_out = weights.shape
    return np.block([[weights, np.zeros((fan_in, 2))], [np.zeros((2, fan_out)), np.eye(2)]])


NETWORKS = {  # precision -> (ONNX builder, numpy reference)
    "fp32": (dense_model, dense_reference),
    "int8": (quantized_dense_model, quantized_dense_reference),
}


@dataclass(frozen=True)
class BuiltArtifact:
    variant: Variant
    uri: str  # repo-relative, forward slashes: the artifact's ``uri`` in model.yaml
    data: bytes
    deviation: float  # largest distance of its network's outputs from the version's expected outputs


def build_artifact(model: ModelSpec, version: VersionSpec, variant: Variant) -> BuiltArtifact:
    """One variant's ONNX bytes, checked (in numpy) against the version's validation cases with
    room to spare: a site on any platform must pass them."""
    layers = layers_for(model, version)
    build_network, reference = NETWORKS[variant.precision]
    data = build_network(
        layers,
        input_name=model.input_name,
        output_name=model.output_name,
        graph_name=f"{model.name}-{version.version}" + ("" if variant.precision == "fp32" else f"-{variant.precision}"),
    )
    deviation = max(
        float(np.abs(reference(layers, np.asarray(rows, dtype=np.float32)) - expected_output(layers, rows)).max())
        for _, rows in model.cases
    )
    if deviation * TOLERANCE_MARGIN > version.tolerance:
        raise SystemExit(f"{model.name} {version.version} {variant.file_name}: deviates by {deviation:.2e}, "
                         f"more than 1/{TOLERANCE_MARGIN} of the tolerance {version.tolerance}")
    uri = f"models/{model.name}/{version.version}/{variant.file_name}"
    return BuiltArtifact(variant, uri, data, deviation)


def model_document(model: ModelSpec, built: dict[str, list[BuiltArtifact]]) -> dict:
    """The Model manifest; ``built`` maps each version to its artifacts."""
    return {
        "apiVersion": "reconciler/v1",
        "kind": "Model",
        "metadata": {"name": model.name, "labels": {"team": model.team}},
        "spec": {
            "description": model.description,
            "interface": {
                "inputs": [{"name": model.input_name, "dtype": "float32", "shape": [-1, model.n_in]}],
                "outputs": [{"name": model.output_name, "dtype": "float32", "shape": [-1, model.n_out]}],
            },
            "versions": [version_entry(model, v, built[v.version]) for v in model.versions],
        },
    }


def version_entry(model: ModelSpec, version: VersionSpec, artifacts: list[BuiltArtifact]) -> dict:
    layers = layers_for(model, version)
    return {
        "version": version.version,
        "artifacts": [artifact_entry(artifact) for artifact in artifacts],
        "validation": [
            {
                "name": case_name,
                "inputs": {model.input_name: rows},
                "expected": {model.output_name: expected_output(layers, rows)},
                "tolerance": version.tolerance,
            }
            for case_name, rows in model.cases
        ],
    }


def artifact_entry(artifact: BuiltArtifact) -> dict:
    platform = {"platform": dict(artifact.variant.platform)} if artifact.variant.platform else {}
    return {
        **platform,
        "uri": artifact.uri,
        "digest": f"sha256:{hashlib.sha256(artifact.data).hexdigest()}",
        "size": len(artifact.data),
        "signature": {"uri": f"{artifact.uri}.sig", "format": "cosign"},
    }


def expected_output(layers: Layers, rows: list[list[float]]) -> list[list[float]]:
    """What the trained (fp32) network answers, rounded as model.yaml writes it."""
    # The site feeds float32 tensors, so the reference starts from the same rounded inputs.
    output = dense_reference(layers, np.asarray(rows, dtype=np.float32))
    return [[round(float(value), EXPECTED_DECIMALS) for value in row] for row in output]


# --- YAML -------------------------------------------------------------------------------------

class _ManifestDumper(yaml.SafeDumper):
    """Tensors and shapes on one line (``[[0.8, 1.0]]``), everything else in block style, and no
    anchors: versions share validation inputs, but each reads on its own."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, items: list) -> yaml.Node:
    flow = not any(isinstance(item, dict) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_ManifestDumper.add_representer(list, _represent_list)


def render_model_yaml(document: dict, built: dict[str, list[BuiltArtifact]]) -> bytes:
    header = (
        "# yaml-language-server: $schema=../../../schemas/model.schema.json\n"
        "# Generated by scripts/build_example_fleet.py: edit the MODELS spec there, not this file.\n"
        + "".join(tolerance_note(version, artifacts) for version, artifacts in built.items() if len(artifacts) > 1)
    )
    body = yaml.dump(document, Dumper=_ManifestDumper, sort_keys=False, width=110, allow_unicode=True)
    return (header + body).encode()


def tolerance_note(version: str, artifacts: list[BuiltArtifact]) -> str:
    """Why a version's tolerance is what it is: how far each artifact lands from the expected outputs."""
    tolerance = max(a.variant.tolerance for a in artifacts)
    lines = [f"# {version} ships one artifact per platform; its validation cases (tolerance {tolerance}) hold for each.",
             "# Largest deviation from the expected outputs, in numpy:"]
    for a in artifacts:
        platform = " ".join(f"{label}={value}" for label, value in a.variant.platform or ())
        lines.append(f"#   {a.variant.file_name} ({a.variant.precision}, {platform or 'any platform'}): {a.deviation:.1e}")
    return "".join(line + "\n" for line in lines)


# --- keys and signatures ------------------------------------------------------------------------

def demo_signing_key(repo: Path, changed: list[Path]) -> ec.EllipticCurvePrivateKey:
    """The demo key pair in keys/, created only when the private key is missing."""
    key_path, pub_path = repo / "keys" / "demo.key", repo / "keys" / "demo.pub"
    if key_path.exists():
        key = trust.load_private_key(key_path.read_bytes())
    else:
        key = trust.generate_private_key()
        write_if_changed(key_path, trust.private_key_pem(key), changed)
    write_if_changed(pub_path, trust.public_key_pem(key), changed)
    return key


def ensure_signature(path: Path, onnx_bytes: bytes, key: ec.EllipticCurvePrivateKey, changed: list[Path]) -> None:
    digest = hashlib.sha256(onnx_bytes).digest()
    trusted = trust.TrustedKey("keys/demo.pub", key.public_key())
    if path.exists():
        try:
            trust.verify_cosign(digest, path.read_bytes(), [trusted])
            return
        except Stalled:
            pass  # stale or damaged: sign again below
    write_if_changed(path, trust.sign_digest(key, digest), changed)


def write_if_changed(path: Path, data: bytes, changed: list[Path]) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    changed.append(path)


# --- entry points ---------------------------------------------------------------------------------

def build(repo: Path) -> list[Path]:
    """Write every model of MODELS into ``repo``; returns the files that changed."""
    changed: list[Path] = []
    key = demo_signing_key(repo, changed)
    for model in MODELS:
        built: dict[str, list[BuiltArtifact]] = {}
        for version in model.versions:
            built[version.version] = [build_artifact(model, version, variant) for variant in version.variants]
            for artifact in built[version.version]:
                path = repo / artifact.uri
                write_if_changed(path, artifact.data, changed)
                ensure_signature(path.with_name(path.name + ".sig"), artifact.data, key, changed)
        model_yaml = render_model_yaml(model_document(model, built), built)
        write_if_changed(repo / "models" / model.name / "model.yaml", model_yaml, changed)
    return changed


def main(argv: list[str]) -> int:
    repo = Path(argv[0]) if argv else DEFAULT_REPO
    changed = build(repo)
    for path in changed:
        print(f"wrote {path.relative_to(repo)}")
    print(f"{len(changed)} file(s) changed in {repo}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
