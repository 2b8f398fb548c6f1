"""MurmurHash3 x86 32-bit and the integer bucketing that flagd's ``fractional`` and the fleet's waves share.

Both must agree bit for bit with flagd's Go evaluator (``murmur3.StringSum32`` of the UTF-8 key, then
``(hash * total) >> 32``), otherwise a site would land in one wave for the agent and in another for an
application reading the same flag through OpenFeature.
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF
_C1 = 0xCC9E2D51
_C2 = 0x1B873593


def murmur3_x86_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3_x86_32 of ``data`` as an unsigned 32-bit integer."""
    whole = len(data) // 4
    blocks = list(struct.unpack_from(f"<{whole}I", data))
    if len(data) % 4:
        blocks.append(int.from_bytes(data[whole * 4 :], "little"))
    state = seed & _MASK
    for index, block in enumerate(blocks):
        block = (block * _C1) & _MASK
        block = ((block << 15) | (block >> 17)) & _MASK
        state ^= (block * _C2) & _MASK
        if index < whole:  # the 1-3 tail bytes skip the round that follows each full block
            state = ((state << 13) | (state >> 19)) & _MASK
            state = (state * 5 + 0xE6546B64) & _MASK
    state ^= len(data)
    state ^= state >> 16
    state = (state * 0x85EBCA6B) & _MASK
    state ^= state >> 13
    state = (state * 0xC2B2AE35) & _MASK
    return state ^ (state >> 16)


def bucket(key: str, total: int) -> int:
    """The bucket in ``range(total)`` that ``key`` falls into, by integer arithmetic only, so every
    implementation agrees at the edges (hash 0 is bucket 0, hash 0xFFFFFFFF is bucket total - 1)."""
    if total < 1:
        raise ValueError(f"bucket total must be at least 1, got {total}")
    return (murmur3_x86_32(key.encode()) * total) >> 32
