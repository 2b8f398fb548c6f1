from __future__ import annotations

import pytest

from reconciler.flags import bucket, murmur3_x86_32

# Published MurmurHash3_x86_32 vectors: the SMHasher-derived list (stackoverflow.com/q/14747343, also
# in Boost.Hash2's tests), "hello" and the quick brown fox at seed 0, and the murmur3 README example.
PUBLISHED = [
    (b"", 0, 0x00000000),
    (b"", 1, 0x514E28B7),
    (b"", 0xFFFFFFFF, 0x81F16F39),
    (b"\xff\xff\xff\xff", 0, 0x76293B50),
    (b"\x21\x43\x65\x87", 0, 0xF55B516B),
    (b"\x21\x43\x65\x87", 0x5082EDEE, 0x2362F9DE),
    (b"\x21\x43\x65", 0, 0x7E4A8634),
    (b"\x21\x43", 0, 0xA0F7B07A),
    (b"\x21", 0, 0x72661CF4),
    (b"\x00\x00\x00\x00", 0, 0x2362F9DE),
    (b"\x00\x00\x00", 0, 0x85F0B427),
    (b"\x00\x00", 0, 0x30F4C306),
    (b"\x00", 0, 0x514E28B7),
    (b"aaaa", 0x9747B28C, 0x5A97808A),
    (b"abc", 0, 0xB3DD93FA),
    (b"Hello, world!", 0x9747B28C, 0x24884CBA),
    ("ππππππππ".encode(), 0x9747B28C, 0xD58063C1),
    (b"The quick brown fox jumps over the lazy dog", 0x9747B28C, 0x2FA826CD),
    (b"hello", 0, 0x248BFA47),
    (b"The quick brown fox jumps over the lazy dog", 0, 0x2E4FF723),
    (b"Turn me into a hash", 1234, 4138100590),
]


@pytest.mark.parametrize(("data", "seed", "expected"), PUBLISHED)
def test_published_vectors(data: bytes, seed: int, expected: int) -> None:
    assert murmur3_x86_32(data, seed) == expected


# flagd-testbed's hash edge keys, found by exhaustive search to hash to the ends of the 32-bit range.
EDGE_KEYS = [
    ("ejOoVL", 0x00000000),
    ("bY9fO-", 0x00000001),
    ("SI7p-", 0x7FFFFFFF),
    ("6LvT0", 0x80000000),
    ("ceQdGm", 0xFFFFFFFF),
]


@pytest.mark.parametrize(("key", "expected"), EDGE_KEYS)
def test_testbed_edge_keys_hash_to_range_edges(key: str, expected: int) -> None:
    assert murmur3_x86_32(key.encode()) == expected


@pytest.mark.parametrize(
    ("key", "total", "expected"),
    [
        ("ejOoVL", 100, 0),  # hash 0 is always the first bucket
        ("ejOoVL", 2**31 - 1, 0),
        ("bY9fO-", 2**31 - 1, 0),  # 1 * (2^31 - 1) >> 32 is still 0
        ("SI7p-", 100, 49),  # the last hash of the lower half stays below the middle
        ("6LvT0", 100, 50),  # the first hash of the upper half starts it
        ("6LvT0", 2, 1),
        ("ceQdGm", 100, 99),  # hash 0xFFFFFFFF is always the last bucket
        ("ceQdGm", 1, 0),
        ("ceQdGm", 2**31 - 1, 2**31 - 2),
        ("checkout-v2store-0042", 100, 26),  # a wave key: deployment + site, hash 1152545565
    ],
)
def test_bucket_scales_the_hash_by_integer_arithmetic(key: str, total: int, expected: int) -> None:
    assert bucket(key, total) == expected


UTF8_PI_HASH = 3966940904  # mmh3.hash("ππππππππ".encode(), 0, signed=False)


def test_bucket_hashes_the_utf8_bytes_of_the_key() -> None:
    # With 2^32 buckets the bucket is the hash itself.
    assert bucket("ππππππππ", 2**32) == murmur3_x86_32("ππππππππ".encode()) == UTF8_PI_HASH


@pytest.mark.parametrize("total", [0, -1])
def test_bucket_refuses_an_empty_range(total: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        bucket("key", total)


def test_agrees_with_the_c_implementation_on_every_tail_length() -> None:
    mmh3 = pytest.importorskip("mmh3")  # pulled in by the flagd provider in the dev extras
    for length in range(0, 40):
        data = bytes((index * 131 + length) % 256 for index in range(length))
        for seed in (0, 1, 0x9747B28C, 0xFFFFFFFF):
            assert murmur3_x86_32(data, seed) == mmh3.hash(data, seed, signed=False), (length, seed)
