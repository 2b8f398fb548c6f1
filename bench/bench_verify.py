"""Signature verification cost per artifact, for each format, against a bare ECDSA verify.

Baseline: `cryptography`'s ECDSA P-256 verify of the artifact's prehashed SHA-256 — the least any
check of a cosign signature can cost. Subjects: reconciler.trust.verify_artifact_signature on a
cosign `.sig`, a key-signed Sigstore bundle (messageSignature), a key-signed DSSE bundle (in-toto
statement), a key-signed model_signing bundle, and a keyless bundle from a local Sigstore (own CA,
CT log and Rekor keys; verified by the sigstore library). Each sample times a batch of calls, and
baseline and subject batches take turns. The verification is a fixed cost per artifact, next to
hashing its bytes; the target bounds the key-signed formats' overhead over the bare verify.

    .venv/bin/python bench/bench_verify.py [--quick] [--repetitions N]"""

from __future__ import annotations

import base64
import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

from common import Stats, arguments, emit, interleaved, machine  # first: puts the repo root on sys.path
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from reconciler import trust
from reconciler.devtools.trust_fixtures import (
    IDENTITY,
    ISSUER,
    LocalSigstore,
    attest_statement,
    dsse_bundle,
    encode,
    message_bundle,
    model_signing_statement,
)

TARGET = 3.0  # key-signed formats: at most 3x a bare ECDSA verify
BATCH = 50
KEYLESS_BATCH = 5
BLOB = b"\x08\x07 model weights " * 4096
NAME = "model.onnx"


def batch(action: Callable[[], object], size: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(size):
            action()
    return run


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=60, quick=15)
    digest = hashlib.sha256(BLOB).digest()
    signer = trust.generate_private_key()
    key = trust.load_public_key(trust.public_key_pem(signer), "release.pub")
    sigstore = LocalSigstore()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as scratch:
        roots = trust.TrustRoots(keys=(key,), identities=(trust.KeylessIdentity(IDENTITY, ISSUER),),
                                 sigstore_trusted_root=sigstore.write_trusted_root(Path(scratch) / "trusted_root.json"))
        signatures = {
            "cosign .sig": trust.sign_digest(signer, digest),
            "key bundle": encode(message_bundle(signer, BLOB)),
            "DSSE bundle": encode(dsse_bundle(signer, attest_statement({NAME: BLOB}))),
            "model_signing bundle": encode(dsse_bundle(signer, model_signing_statement({NAME: BLOB, "config.json": b"{}"}))),
            "keyless bundle": encode(sigstore.sign_blob(BLOB)),
        }
        cosign_der = base64.b64decode(signatures["cosign .sig"])
        prehashed = ec.ECDSA(utils.Prehashed(hashes.SHA256()))

        def bare() -> None:
            key.public_key.verify(cosign_der, digest, prehashed)

        results: dict[str, tuple[Stats, Stats]] = {}
        for label, signature in signatures.items():
            def subject(signature: bytes = signature) -> None:
                trust.verify_artifact_signature(digest, NAME, signature, None, roots)

            subject()  # the first call pays for imports and loading the trusted root
            size = KEYLESS_BATCH if label == "keyless bundle" else BATCH
            base, subj = interleaved(batch(bare, size), batch(subject, size), args.repetitions)
            results[label] = (Stats.of([b / size for b in base]), Stats.of([s / size for s in subj]))

    print(f"signature verification per artifact vs a bare cryptography ECDSA P-256 verify ({machine()})")
    for label, (base, subj) in results.items():
        print(f"  {label:22s} {subj.median * 1e6:9.1f} us  (p10 {subj.p10 * 1e6:.1f}, p90 {subj.p90 * 1e6:.1f})"
              f"  bare verify {base.median * 1e6:6.1f} us  ratio {subj.median / base.median:6.2f}")
    key_signed = {label: s.median / b.median for label, (b, s) in results.items() if label != "keyless bundle"}
    worst = max(key_signed, key=key_signed.__getitem__)
    keyless_ms = results["keyless bundle"][1].median * 1e3
    emit("verify", key_signed[worst], f"key-signed formats <= {TARGET} x bare verify", key_signed[worst] <= TARGET,
         f"worst {worst} {key_signed[worst]:.2f}x; keyless {keyless_ms:.1f} ms",
         per_format_us={label: round(s.median * 1e6, 1) for label, (_, s) in results.items()},
         ratios={label: round(s.median / b.median, 2) for label, (b, s) in results.items()},
         bare_verify_us=round(results["cosign .sig"][0].median * 1e6, 1))


if __name__ == "__main__":
    main()
