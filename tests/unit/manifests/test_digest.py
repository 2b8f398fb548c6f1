"""Digest: parsed once, the very string it came from, its parts at hand; refused when malformed."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import TypeAdapter, ValidationError

from reconciler.manifests.types import Digest

HEX = hashlib.sha256(b"model").hexdigest()


def test_a_digest_is_its_string_with_parts() -> None:
    digest = Digest(f"sha256:{HEX}")
    assert (str(digest), digest.algorithm, digest.hex, digest.raw) == (f"sha256:{HEX}", "sha256", HEX,
                                                                        hashlib.sha256(b"model").digest())
    assert digest == f"sha256:{HEX}" and {digest: 1}[f"sha256:{HEX}"] == 1


def test_digests_of_hashes_and_hex_agree() -> None:
    assert Digest.of(hashlib.sha256(b"model")) == Digest.from_hex(HEX) == f"sha256:{HEX}"


@pytest.mark.parametrize("text", ["", HEX, f"sha256:{HEX.upper()}", f"sha256:{HEX[:-1]}", f"sha512:{HEX}",
                                  f"sha256:{HEX}\n", f" sha256:{HEX}"])
def test_a_malformed_digest_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a sha256:<64 hex> digest"):
        Digest(text)
    with pytest.raises(ValidationError):
        TypeAdapter(Digest).validate_python(text)


def test_a_validated_digest_serialises_as_its_string() -> None:
    adapter = TypeAdapter(Digest)
    digest = adapter.validate_python(f"sha256:{HEX}")
    assert isinstance(digest, Digest) and adapter.dump_json(digest) == f'"sha256:{HEX}"'.encode()
