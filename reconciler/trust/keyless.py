"""Keyless Sigstore bundles: a short-lived Fulcio certificate names the signer (an email or a CI
workflow URI, vouched for by an OIDC issuer), and a Rekor entry proves when it signed.

Verification is the ``sigstore`` library's, fully offline: the certificate chains to a CA of the
trusted root at the time the log recorded, its embedded SCT holds under a CT log key, the Rekor
entry's inclusion proof, signed checkpoint and inclusion promise hold under the Rekor key, the
entry matches the signature, and the signature covers the artifact (or, for DSSE, the statement
that covers it). We read the certificate's identity first only to say precisely which trusted
identity did not match."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError
from sigstore.hashes import Hashed
from sigstore.models import Bundle as SigstoreBundle
from sigstore.models import TrustedRoot
from sigstore.verify import Verifier
from sigstore.verify.policy import AllOf, Identity, OIDCIssuer, OIDCIssuerV2
from sigstore_models.common.v1 import HashAlgorithm

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.manifests.models import SignatureFormat
from reconciler.trust.bundles import Bundle, check_message_digest, check_statement
from reconciler.trust.roots import KeylessIdentity, describe_identities

_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw UTF-8 bytes
_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # a DER UTF8String
_OTHERNAME_IDENTITY = ObjectIdentifier("1.3.6.1.4.1.57264.1.7")
_UTF8STRING_TAG = 0x0C


def verify_keyless(sha256_digest: bytes, file_name: str, signature_file: bytes, bundle: Bundle,
                   declared: SignatureFormat | None, identities: tuple[KeylessIdentity, ...],
                   trusted_root: Path | None) -> KeylessIdentity:
    """The trusted identity whose certificate signed ``signature_file`` over the artifact."""
    if not identities:
        raise Stalled(reasons.NoTrustedIdentities, "the bundle is signed keyless (by a certificate), and the site trusts no identities")
    try:
        parsed = SigstoreBundle.from_json(signature_file)
    except (SigstoreError, ValueError) as exc:
        # Parsing checks too: an unreadable timestamp response is a VerificationError from here.
        raise Stalled(reasons.SignatureMalformed, f"the keyless bundle is not valid: {exc}") from None
    signer = trusted_signer(parsed.signing_certificate, identities)
    policy = identity_policy(parsed.signing_certificate, signer)
    verifier = sigstore_verifier(trusted_root)
    try:
        if bundle.message_signature is not None:
            check_message_digest(bundle.message_signature, sha256_digest)
            verifier.verify_artifact(Hashed(algorithm=HashAlgorithm.SHA2_256, digest=sha256_digest), parsed, policy)
        else:
            payload_type, payload = verifier.verify_dsse(parsed, policy)
            check_statement(payload_type, payload, sha256_digest, file_name, declared)
    except (VerificationError, SigstoreError, ValueError) as exc:
        raise Stalled(reasons.BundleVerificationFailed,
                      f"the keyless bundle of {signer} does not verify against the trusted root "
                      f"({root_name(trusted_root)}): {exc}") from None
    return signer


def trusted_signer(certificate: x509.Certificate, identities: tuple[KeylessIdentity, ...]) -> KeylessIdentity:
    names = _certificate_identities(certificate)
    same_identity = [i for i in identities if i.identity in names]
    if not same_identity:
        raise Stalled(reasons.CertificateIdentityMismatch,
                      f"the bundle's certificate is for {', '.join(sorted(names)) or 'no identity'}; "
                      f"tried identities: {describe_identities(identities)}")
    issuer = _certificate_issuer(certificate)
    signer = next((i for i in same_identity if i.issuer == issuer), None)
    if signer is None:
        raise Stalled(reasons.CertificateIssuerMismatch,
                      f"the bundle's certificate was issued on the word of OIDC issuer {issuer or 'unknown'}; "
                      f"tried identities: {describe_identities(tuple(same_identity))}")
    return signer


def _certificate_identities(certificate: x509.Certificate) -> set[str]:
    """Email, URI and Sigstore other-name SANs, the identities Fulcio certifies."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    found = set(names.get_values_for_type(x509.RFC822Name)) | set(names.get_values_for_type(x509.UniformResourceIdentifier))
    found |= {other.value.decode(errors="replace") for other in names.get_values_for_type(x509.OtherName)
              if other.type_id == _OTHERNAME_IDENTITY}
    return found


def _certificate_issuer(certificate: x509.Certificate) -> str | None:
    for oid in (_ISSUER_V1, _ISSUER_V2):
        try:
            raw = certificate.extensions.get_extension_for_oid(oid).value.value  # type: ignore[attr-defined]
        except x509.ExtensionNotFound:
            continue
        return (raw if oid == _ISSUER_V1 else _der_utf8(raw)).decode(errors="replace")
    return None


def _der_utf8(der: bytes) -> bytes:
    """The content of a DER UTF8String (short or long form length); the raw bytes if it is not one."""
    if len(der) < 2 or der[0] != _UTF8STRING_TAG:
        return der
    if der[1] < 0x80:
        return der[2:2 + der[1]]
    size_bytes = der[1] & 0x7F
    return der[2 + size_bytes:]


def identity_policy(certificate: x509.Certificate, signer: KeylessIdentity) -> AllOf:
    """Fulcio writes the issuer in the old extension and, since 2023, the new one; check the one present."""
    try:
        certificate.extensions.get_extension_for_oid(_ISSUER_V1)
        issuer_policy = OIDCIssuer(signer.issuer)
    except x509.ExtensionNotFound:
        issuer_policy = OIDCIssuerV2(signer.issuer)
    return AllOf([Identity(identity=signer.identity), issuer_policy])


@lru_cache(maxsize=8)
def sigstore_verifier(trusted_root: Path | None) -> Verifier:
    """A verifier of the site's trusted root, or of the production root the sigstore package ships
    (read from the package, never refreshed over the network: update the package to rotate it).
    Loaded once per path and process; a site that replaces its trusted_root.json restarts the agent."""
    try:
        if trusted_root is None:
            production = resources.files("sigstore._store") / "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev" / "trusted_root.json"
            with resources.as_file(production) as path:
                return Verifier(trusted_root=TrustedRoot.from_file(str(path)))
        return Verifier(trusted_root=TrustedRoot.from_file(str(trusted_root)))
    except (OSError, ValueError, SigstoreError) as exc:
        raise Stalled(reasons.TrustRootInvalid, f"cannot load the Sigstore trusted root {root_name(trusted_root)}: {exc}") from None


def root_name(trusted_root: Path | None) -> str:
    return str(trusted_root) if trusted_root is not None else "the sigstore package's production root"
