"""What a site trusts to sign artifacts, and what vouched for one.

Trust roots come from the site's own configuration, never from the fleet repository they protect.
A Model version may narrow them (only these signers may sign me) but never widen them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.manifests.models import SignatureFormat
from reconciler.trust.keys import TrustedKey, describe_keys


@dataclass(frozen=True)
class KeylessIdentity:
    """A keyless signer: the certificate's subject (email or URI SAN) and the OIDC issuer that
    vouched for it, e.g. a CI workflow URI and ``https://token.actions.githubusercontent.com``."""

    identity: str
    issuer: str

    def __str__(self) -> str:
        return f"{self.identity} (issuer {self.issuer})"


@dataclass(frozen=True)
class TrustRoots:
    keys: tuple[TrustedKey, ...] = ()
    identities: tuple[KeylessIdentity, ...] = ()
    # The Sigstore trusted_root.json (Fulcio CAs, Rekor and CT log keys) keyless bundles chain to;
    # None: the production root shipped inside the installed sigstore package (read offline).
    sigstore_trusted_root: Path | None = None

    def describe(self) -> str:
        keys = f"keys: {describe_keys(self.keys)}" if self.keys else "no keys"
        identities = f"identities: {describe_identities(self.identities)}" if self.identities else "no identities"
        return f"{keys}; {identities}"


def describe_identities(identities: tuple[KeylessIdentity, ...]) -> str:
    return ", ".join(str(identity) for identity in identities)


@dataclass(frozen=True)
class Verified:
    """Who vouched for an artifact: a trusted key or a keyless identity, and in which format."""

    format: SignatureFormat
    key: TrustedKey | None = None
    identity: KeylessIdentity | None = None

    @property
    def by(self) -> str:
        return f"key {self.key}" if self.key is not None else f"identity {self.identity}"

    def __str__(self) -> str:
        return f"{self.format} signature by {self.by}"


def narrow(roots: TrustRoots, allowed_identities: list[str] | None, allowed_keys: list[str] | None) -> TrustRoots:
    """The site's roots restricted to the signers a Model version allows: keys by name or key id
    (full or the 16-character short form), identities by certificate identity.

    ``None`` for both leaves the roots as they are. Once a version names any signer, only the
    signers it names remain: a version listing only identities accepts no key, since the point of
    naming signers is to exclude everyone else. Nothing outside the site's roots is ever added."""
    if allowed_identities is None and allowed_keys is None:
        return roots
    keys = tuple(key for key in roots.keys if _key_named(key, allowed_keys or []))
    identities = tuple(i for i in roots.identities if i.identity in (allowed_identities or []))
    if not keys and not identities:
        allowed = ", ".join([*(allowed_keys or []), *(allowed_identities or [])]) or "nobody"
        raise Stalled(reasons.NoTrustedSigners,
                      f"the version allows only {allowed} to sign it, and the site trusts none of them; "
                      f"the site trusts {roots.describe()}")
    return TrustRoots(keys=keys, identities=identities, sigstore_trusted_root=roots.sigstore_trusted_root)


def _key_named(key: TrustedKey, names: list[str]) -> bool:
    return any(name in (key.name, key.key_id, key.key_id[:16]) for name in names)
