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

from reconciler import reasons

FailureKind = Literal["version", "site"]

VERSION_EVIDENCE: frozenset[str] = frozenset({
    # validation before activation (runtime/validation.py, runtime/registry.py)
    reasons.ValidationFailed, reasons.ValidationCrashed, reasons.ValidationTimeout, reasons.ModelInterfaceMismatch, reasons.ModelLoadFailed,
    # canary analysis (canary.py); InsufficientTraffic only where the Deployment's maxWait policy says fail
    reasons.ErrorRateTooHigh, reasons.LatencyTooHigh, reasons.DisagreesWithStable, reasons.InsufficientTraffic,
    # the bytes or the signature do not match what the manifest pins (artifacts.py, fetch.py, trust/)
    reasons.ArtifactDigestMismatch, reasons.ArtifactSizeMismatch, reasons.ArtifactTooLarge, reasons.DigestInvalid,
    reasons.BundleDigestMismatch, reasons.StatementMissingFile, reasons.SignatureMalformed, reasons.SignatureFormatUnsupported,
    reasons.BundleVerificationFailed,
    # the version's URI itself is wrong (artifacts.py), or names a Git LFS pointer (verification.py)
    reasons.ArtifactUriInvalid, reasons.ArtifactPathEscapes, reasons.ArtifactIsLfsPointer,
    # the artifact's path in the commit leads out of the repository through a link (committree.py)
    reasons.UnsafeRepoPath,
})

SITE_CONDITIONS: frozenset[str] = frozenset({
    # trust roots of the site's own config (trust/, loop.py)
    reasons.NoTrustedKeys, reasons.NoTrustedIdentities, reasons.NoTrustedSigners, reasons.SignatureInvalid, reasons.CertificateIdentityMismatch,
    reasons.CertificateIssuerMismatch, reasons.TrustKeyInvalid, reasons.TrustKeyUnreadable, reasons.TrustRootInvalid, reasons.TlsCaBundleInvalid,
    # network, registry and the site's fetch settings (fetch.py, httpsource.py, artifacts.py)
    reasons.ArtifactUnavailable, reasons.ArtifactNotFound, reasons.ArtifactTruncated, reasons.ArtifactStalled, reasons.ArtifactDeadlineExceeded,
    reasons.ArtifactUnreadable, reasons.ArtifactTlsFailed, reasons.ArtifactProxyInvalid, reasons.ArtifactProxyRejected,
    reasons.ArtifactAuthInsecure, reasons.ArtifactAuthInvalid, reasons.ArtifactAuthMissing, reasons.ArtifactRedirectRefused,
    reasons.ArtifactRequestRejected, reasons.ArtifactRangeInvalid, reasons.ArtifactEncodingUnsupported, reasons.ArtifactSchemeUnsupported,
    # disk, state directory, runtime, agent (artifacts.py, state.py, apply.py, runtime/)
    reasons.DiskFull, reasons.StoreWriteFailed, reasons.StateWriteFailed, reasons.StateLocked, reasons.StateCorrupt, reasons.StateOfOtherSite,
    reasons.RuntimeNotServing, reasons.RuntimeStartFailed, reasons.ListenFailed,
    reasons.CanaryProgressMismatch, reasons.CanaryIsActive, reasons.NoActiveVersion, reasons.NoCanary, reasons.InvalidWeight,
    # what the plan cannot resolve for this site (plan.py)
    reasons.SiteNotInFleet, reasons.ModelNotFound, reasons.VersionNotFound, reasons.NoMatchingArtifact, reasons.FlagEvaluationFailed,
    # the fleet repo, the status channels and local keys: the site as a whole, never one version
    reasons.SourceUnreachable, reasons.SourceFetchFailed, reasons.SourceCacheCorrupt, reasons.BranchNotFound, reasons.RevisionNotFound,
    reasons.InvalidCommitId, reasons.FileUnreadable, reasons.InvalidManifests, reasons.HistoryRewritten,
    reasons.CommitUnsigned, reasons.CommitSignatureInvalid, reasons.CommitPolicyInvalid, reasons.StatusFetchFailed, reasons.StatusPushFailed, reasons.ForgeRejected,
    reasons.ForgeTokenMissing, reasons.ForgeUnavailable, reasons.SigningKeyInvalid, reasons.KeyPasswordWrong,
})


def failure_kind(reason: str) -> FailureKind:
    """``version`` when the reason is evidence against the version, else ``site``; a retired name
    in an older record counts as the reason it became."""
    return "version" if reasons.RETIRED.get(reason, reason) in VERSION_EVIDENCE else "site"
