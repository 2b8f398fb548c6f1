"""Signed status records. A site signs each record it publishes with its own keys (its Site
document enrolls the public halves, ``spec.statusKeys``): per key an ECDSA P-256 signature, base64
of ASN.1 DER as in a cosign ``.sig``, over SHA-256 of the record's canonical JSON, one per line of
``status.json.sig`` beside the record. A record counts when one line verifies under one enrolled
key, so a site that holds an old and a new key during a rotation is believed before, during and
after the pull requests that add the new key and remove the old one. Whoever reads records for a decision (gates, ``status``, ``audit``,
``report``) checks them against the keys the Site document of the fleet commit they read names,
and ignores, with a warning and a note, those that do not verify.

Canonical JSON: the record's JSON value with keys sorted, no whitespace, UTF-8, as Python's
``json`` writes numbers. It is taken from the stored bytes, not from the model, so records stay
verifiable when the model gains fields.

Unsigned mode: a site whose Site document enrolls no key reports unsigned, and its records count
unless the Fleet says ``requireSignedStatus``. A site that enrolls a key never reports unsigned:
an unsigned record on its ref is a forgery like any other."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric import ec

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.models import Site
from reconciler.trust import TrustedKey, load_public_key, sign_digest, verify_cosign

log = logging.getLogger(__name__)

SIGNATURE_FILE = "status.json.sig"
MAX_REMEMBERED = 100_000  # verdicts an agent keeps between reads
MAX_SITES_CACHED = 65_536  # parsed public keys


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_digest(stored: bytes) -> bytes:
    """SHA-256 of the canonical JSON of a stored record (which must be JSON)."""
    return hashlib.sha256(canonical_json(json.loads(stored))).digest()


@dataclass(frozen=True)
class RecordSigner:
    """The site's private keys (site.yaml ``statusKeys``): sign what the site publishes."""

    private_keys: tuple[ec.EllipticCurvePrivateKey, ...]

    def sign(self, stored: bytes) -> bytes:
        digest = record_digest(stored)
        return b"".join(sign_digest(key, digest) + b"\n" for key in self.private_keys)

    def own_keys(self, site: str) -> StatusKeyring:
        """What the site takes as its own earlier record: signed by each of its keys. After a
        rotation it so signs its record anew, with the new key too, before the old one is revoked."""
        return StatusKeyring({site: tuple(TrustedKey(f"{site} (this site)", key.public_key())
                                          for key in self.private_keys)}, every_key=True)


@dataclass(frozen=True)
class StatusKeyring:
    """Which keys vouch for which site's records, from one fleet commit's Site documents."""

    keys: Mapping[str, tuple[TrustedKey, ...]] = field(default_factory=dict)  # site -> enrolled keys
    require_signed: bool = False
    every_key: bool = False  # a record counts only when signed by each of the site's keys

    @classmethod
    def of_fleet(cls, fleet: FleetRepo) -> StatusKeyring:
        keys = {name: _usable(site) for name, site in fleet.sites.items() if site.spec.statusKeys}
        return cls(keys, fleet.spec.requireSignedStatus)

    def refusal(self, site: str, stored: bytes, signature: bytes | None) -> str | None:
        """None when the record counts; else why it does not, for a warning and a note."""
        enrolled = self.keys.get(site)
        if enrolled is None:
            if not self.require_signed:
                return None  # unsigned mode; a signature nobody can check counts as none
            return "unsigned: the fleet requires signed status and the Site document enrolls no key" \
                if signature is None else "unknown key: the fleet requires signed status and the Site document " \
                                          "enrolls no key"
        if signature is None:
            return "unsigned, but the Site document enrolls a key (forged)"
        try:
            digest = record_digest(stored)
        except ValueError as error:
            return f"unreadable record ({error})"
        lines = signature.splitlines()
        if self.every_key and not all(any(_verifies(digest, line, (key,)) for line in lines) for key in enrolled):
            return "not signed by each of this site's keys (after a new key: signed anew)"
        if not any(_verifies(digest, line, enrolled) for line in lines):
            return "forged/unknown key: the signature verifies under none of the keys the Site document enrolls " \
                   "(a forgery, or a revoked key)"
        return None


def _verifies(digest: bytes, line: bytes, keys: tuple[TrustedKey, ...]) -> bool:
    try:
        verify_cosign(digest, line, keys)
    except Stalled:  # malformed, or by none of the keys
        return False
    return True


def _usable(site: Site) -> tuple[TrustedKey, ...]:
    """The keys the Site document enrolls that load; one that does not is left out (and so
    verifies nothing)."""
    keys = []
    for declared in site.spec.statusKeys:
        name = f"{site.metadata.name}/{declared.id}"
        try:
            keys.append(TrustedKey(name, _public_key(declared.publicKey)))
        except Stalled as error:
            log.warning("status key %s unusable: %s", name, error.message)
    return tuple(keys)


@lru_cache(maxsize=MAX_SITES_CACHED)
def _public_key(pem: str) -> ec.EllipticCurvePublicKey:
    """Parsed once per process: every reconcile with a rollout builds the keyring of the whole fleet."""
    return load_public_key(pem.encode(), "status key").public_key


@dataclass(frozen=True)
class Ignored:
    site: str
    commit: str
    why: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"ignored status record {self.commit[:12]} of site {self.site}: {self.why}"


@dataclass
class Verdicts:
    """What an agent's earlier reads found, so that its next read checks only records that are new
    (a status commit's id covers its record and signature) and warns about each ignored one once."""

    refusals: dict[tuple[str, tuple[str, ...], bool, bool], str | None] = field(default_factory=dict)
    warned: set[Ignored] = field(default_factory=set)

    def forget_when_full(self) -> None:
        for memory in (self.refusals, self.warned):
            if len(memory) > MAX_REMEMBERED:
                memory.clear()


@dataclass
class RecordCheck:
    """One read's verdicts: which records counted, and those ignored (with why), to report."""

    keyring: StatusKeyring
    ignored: list[Ignored] = field(default_factory=list)
    earlier: Verdicts = field(default_factory=Verdicts)  # an agent passes the same one to every read

    @classmethod
    def of_fleet(cls, fleet: FleetRepo | None) -> RecordCheck | None:
        """The check against ``fleet``'s Site documents; None (unsigned mode) when no fleet loaded."""
        return cls(StatusKeyring.of_fleet(fleet)) if fleet is not None else None

    def admit(self, site: str, commit: str, stored: bytes | None, signature: bytes | None) -> bool:
        if stored is None:
            return True  # parse_record says what is missing
        keys = self.keyring.keys.get(site, ())
        remembered = (commit, tuple(key.key_id for key in keys), self.keyring.require_signed, self.keyring.every_key)
        if remembered in self.earlier.refusals:
            why = self.earlier.refusals[remembered]
        else:
            self.earlier.forget_when_full()
            why = self.earlier.refusals[remembered] = self.keyring.refusal(site, stored, signature)
        if why is None:
            return True
        ignored = Ignored(site, commit, why)
        if ignored in self.ignored:  # read again (a site's newest record, then its history)
            return False
        self.ignored.append(ignored)
        if ignored not in self.earlier.warned:
            self.earlier.warned.add(ignored)
            log.warning("%s", ignored, extra={"reason": reasons.StatusRecordIgnored})
        return False

