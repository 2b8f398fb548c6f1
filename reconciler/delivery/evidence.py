"""PURE: which failures a site reports are evidence against the version it was asked to run, and
which are conditions of the site itself. Only version evidence counts toward a rollout's
``failureThreshold``: a site without trust roots, with a full disk or without a network has
proven nothing about the model, and must not freeze the fleet's rollout (it reports ``error``
with its reason, and clears itself once fixed).

Version evidence is what every site would find about the same bytes: validation cases that fail,
an interface that does not match, a model that crashes or hangs the validation child, a canary
analysis that fails, bytes that do not match the digest the manifest pins or a signature over
other bytes, a URI that escapes the repo. A signature that verifies under none of *this site's*
keys or identities is a site condition: the digest pinned in Git was checked before it, so the
bytes are the ones the manifest names; whether the site trusts their signer is its own config.

A reason missing from the table is a site condition: a new kind of failure must be added here on
purpose before it can abort a rollout (tests/unit/delivery/test_evidence.py checks every reason the code raises).
"""

from __future__ import annotations

from typing import Literal

FailureKind = Literal["version", "site"]

VERSION_EVIDENCE: frozenset[str] = frozenset({
    # validation before activation (runtime/validation.py, runtime/registry.py)
    "ValidationFailed", "ValidationCrashed", "ValidationTimeout", "ModelInterfaceMismatch", "ModelLoadFailed",
    # canary analysis (canary.py); InsufficientTraffic only where the Deployment's maxWait policy says fail
    "ErrorRateTooHigh", "LatencyTooHigh", "DisagreesWithStable", "InsufficientTraffic",
    # the bytes or the signature do not match what the manifest pins (artifacts.py, fetch.py, trust/)
    "ArtifactDigestMismatch", "ArtifactSizeMismatch", "ArtifactTooLarge", "DigestMismatch", "DigestInvalid",
    "BundleDigestMismatch", "StatementMissingFile", "SignatureMalformed", "SignatureFormatUnsupported",
    "BundleVerificationFailed",
    # the version's URI itself is wrong (artifacts.py), or names a Git LFS pointer (verification.py)
    "ArtifactUriInvalid", "ArtifactPathEscapes", "ArtifactIsLfsPointer",
    # the artifact's path in the commit leads out of the repository through a link (committree.py)
    "UnsafeRepoPath",
})

SITE_CONDITIONS: frozenset[str] = frozenset({
    # trust roots of the site's own config (trust/, loop.py)
    "NoTrustedKeys", "NoTrustedIdentities", "NoTrustedSigners", "SignatureInvalid", "CertificateIdentityMismatch",
    "CertificateIssuerMismatch", "TrustKeyInvalid", "TrustKeyUnreadable", "StatusKeyUnreadable", "TrustRootInvalid", "TlsCaBundleInvalid",
    # network, registry and the site's fetch settings (fetch.py, httpsource.py, artifacts.py)
    "ArtifactUnavailable", "ArtifactNotFound", "ArtifactTruncated", "ArtifactStalled", "ArtifactDeadlineExceeded",
    "ArtifactUnreadable", "ArtifactTlsFailed", "ArtifactProxyInvalid", "ArtifactProxyRejected",
    "ArtifactAuthInsecure", "ArtifactAuthInvalid", "ArtifactAuthMissing", "ArtifactRedirectRefused",
    "ArtifactRequestRejected", "ArtifactRangeInvalid", "ArtifactEncodingUnsupported", "ArtifactSchemeUnsupported",
    # disk, state directory, runtime, agent (artifacts.py, state.py, apply.py, runtime/)
    "DiskFull", "StoreWriteFailed", "StateWriteFailed", "StateLocked", "StateCorrupt", "StateOfOtherSite",
    "RuntimeNotServing", "RuntimeStartFailed", "ListenFailed",
    "CanaryProgressMismatch", "CanaryIsActive", "NoActiveVersion", "NoCanary", "InvalidWeight",
    # what the plan cannot resolve for this site (plan.py)
    "SiteNotInFleet", "ModelNotFound", "VersionNotFound", "NoMatchingArtifact", "FlagEvaluationFailed",
    # the fleet repo, the status channels and local keys: the site as a whole, never one version
    "SourceUnreachable", "SourceFetchFailed", "SourceCacheCorrupt", "BranchNotFound", "RevisionNotFound",
    "InvalidCommitId", "FileUnreadable", "InvalidManifests", "HistoryRewritten",
    "CommitUnsigned", "CommitSignatureInvalid", "CommitPolicyInvalid", "StatusFetchFailed", "StatusPushFailed", "ForgeRejected",
    "ForgeTokenMissing", "ForgeUnavailable", "SigningKeyInvalid", "KeyPasswordWrong",
    # batch runs: the site's directories and the Deployment's batch section (batch/)
    "BatchDirectoryUnmapped", "BatchInputMissing", "BatchInputMisfit", "BatchNotInstalled", "BatchNotScheduled",
    "BatchRunInProgress",
})


def failure_kind(reason: str) -> FailureKind:
    """``version`` when the reason is evidence against the version, else ``site``."""
    return "version" if reason in VERSION_EVIDENCE else "site"
