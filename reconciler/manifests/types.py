"""Scalar types of the fleet-repo language: names, versions, digests, durations, clock times.
Each parses once into the value the code uses (a Duration is a timedelta), so nothing downstream
re-checks strings."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from datetime import time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, GetCoreSchemaHandler, PlainSerializer, StringConstraints, WithJsonSchema
from pydantic_core import core_schema

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)]

# Kubernetes label keys (optional DNS-subdomain prefix) and values.
LabelKey = Annotated[
    str, StringConstraints(pattern=r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
]
LabelValue = Annotated[
    str, StringConstraints(pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$", max_length=63)
]

VersionString = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,127}$")]
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
FlagKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class Digest(str):
    """A content digest, parsed once (as sigstore's ``Hashed``): ``sha256:`` and 64 lower-case hex
    digits. It is the very string that manifests, state.json and status records hold (so it
    compares, hashes and serialises as that string), with its parts at hand instead of re-parsed."""

    __slots__ = ()
    _FORM = re.compile(DIGEST_PATTERN.removeprefix("^").removesuffix("$"))

    def __new__(cls, text: str) -> Digest:
        if not cls._FORM.fullmatch(text):  # not match: Python's $ also matches before a final newline
            raise ValueError(f"{text!r} is not a sha256:<64 hex> digest")
        return super().__new__(cls, text)

    @classmethod
    def of(cls, hashed: hashlib._Hash) -> Digest:
        """The digest a finished ``hashlib.sha256()`` computed."""
        return cls(f"{hashed.name}:{hashed.hexdigest()}")

    @classmethod
    def from_hex(cls, hex_digits: str) -> Digest:
        return cls(f"sha256:{hex_digits}")

    @property
    def algorithm(self) -> str:
        return self.partition(":")[0]

    @property
    def hex(self) -> str:
        return self.partition(":")[2]

    @property
    def raw(self) -> bytes:
        """The 32 bytes, for signature checks over the blob's hash."""
        return bytes.fromhex(self.hex)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: object, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema(pattern=DIGEST_PATTERN))

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")
DURATION_PATTERN = r"^(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$"


def parse_duration(value: object) -> timedelta:
    """'90s', '5m', '1h30m', '250ms' (Go-style, as Flux and Argo write them) or seconds as a number."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a string like '30s', '5m' or '1h30m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _timedelta(value, seconds=value)
    if not isinstance(value, str) or not value:
        raise ValueError("a duration is a string like '30s', '5m' or '1h30m'")
    match = _DURATION.match(value)
    if not match or not any(match.groups()):
        raise ValueError(f"{value!r} is not a duration like '30s', '5m' or '1h30m'")
    hours, minutes, seconds, millis = (int(g) if g else 0 for g in match.groups())
    return _timedelta(value, hours=hours, minutes=minutes, seconds=seconds, milliseconds=millis)


def _timedelta(value: object, **parts: float) -> timedelta:
    try:
        return timedelta(**parts)
    except OverflowError:  # beyond timedelta's 999999999 days, or infinite
        raise ValueError(f"{value!r} is longer than any duration this can wait") from None


def format_duration(value: timedelta) -> str:
    total_ms = round(value.total_seconds() * 1000)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s"), (millis, "ms")) if n]
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["30s", "5m", "1h30m"]}),
]

# Defaults of the Fleet document, and of a site's own settings (site.yaml) that may override them.
POLL_INTERVAL: str = "30s"  # how often a site looks for a new commit
STALE_AFTER: str = "10m"  # a site silent (or out of reach of the fleet repo) for longer is stale


def parse_clock(value: object) -> time:
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(f"{value!r} is not a time of day like '02:30' (24-hour HH:MM)")
    hour, minute = value.split(":")
    return time(int(hour), int(minute))


ClockTime = Annotated[
    time,
    BeforeValidator(parse_clock),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9]$"}),
]


def iana_zone(name: str) -> str:
    """``name`` if the IANA time zone database has it (the system's, or the tzdata package's)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone, e.g. 'Europe/Berlin'") from None
    return name


def require_unique(values: Sequence[str], what: str) -> None:
    """ValueError naming every value given more than once (sorted), e.g. ``wave names``."""
    seen = Counter(values)
    repeated = sorted(value for value, count in seen.items() if count > 1)
    if repeated:
        raise ValueError(f"{what} must be unique: {', '.join(repeated)}")
