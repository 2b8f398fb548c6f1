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

from reconciler import reasons as R

FailureKind = Literal["version", "site"]

VERSION_EVIDENCE: frozenset[str] = frozenset({
    # validation before activation (runtime/validation.py, runtime/registry.py)
    R.ValidationFailed, R.ValidationCrashed, R.ValidationTimeout, R.ModelInterfaceMismatch, R.ModelLoadFailed,
    # canary analysis (canary.py); InsufficientTraffic only where the Deployment's maxWait policy says fail
    R.ErrorRateTooHigh, R.LatencyTooHigh, R.DisagreesWithStable, R.InsufficientTraffic, R.PredictionDriftTooHigh,
    # the bytes or the signature do not match what the manifest pins (artifacts.py, fetch.py, trust/)
    R.ArtifactDigestMismatch, R.ArtifactSizeMismatch, R.ArtifactTooLarge, R.DigestInvalid,
    R.BundleDigestMismatch, R.StatementMissingFile, R.SignatureMalformed, R.SignatureFormatUnsupported,
    R.BundleVerificationFailed,
    # the version's URI itself is wrong (artifacts.py), or names a Git LFS pointer (verification.py)
    R.ArtifactUriInvalid, R.ArtifactPathEscapes, R.ArtifactIsLfsPointer,
    # the artifact's path in the commit leads out of the repository through a link (committree.py)
    R.UnsafeRepoPath,
    # the version's reference profile is no profile, or not one of its tensors (monitoring/profile.py)
    R.ProfileInvalid, R.ProfileMismatch,
    # the OCI manifest the URI names is not the artifact's, or holds no layer a site can read (ingest/oci*.py)
    R.OciManifestInvalid, R.OciManifestDigestMismatch, R.OciLayerNotFound, R.OciLayerAmbiguous, R.OciLayerUnsupported,
    R.OciPlatformMissing, R.OciArchiveUnsafe, R.OciArchiveInvalid,
    # the registry holds no signature of the artifact's manifest, or one of another manifest (ingest/ocisignatures.py)
    R.SignatureNotFound, R.SignatureManifestMismatch,
})

SITE_CONDITIONS: frozenset[str] = frozenset({
    # trust roots of the site's own config (trust/, loop.py)
    R.NoTrustedKeys, R.NoTrustedIdentities, R.NoTrustedSigners, R.SignatureInvalid, R.CertificateIdentityMismatch,
    R.CertificateIssuerMismatch, R.TrustKeyInvalid, R.TrustKeyUnreadable, R.StatusKeyUnreadable, R.TrustRootInvalid, R.TlsCaBundleInvalid,
    # network, registry and the site's fetch settings (fetch.py, httpsource.py, artifacts.py)
    R.ArtifactUnavailable, R.ArtifactNotFound, R.ArtifactTruncated, R.ArtifactStalled, R.ArtifactDeadlineExceeded,
    R.ArtifactUnreadable, R.ArtifactTlsFailed, R.ArtifactProxyInvalid, R.ArtifactProxyRejected,
    R.ArtifactAuthInsecure, R.ArtifactAuthInvalid, R.ArtifactAuthMissing, R.ArtifactRedirectRefused,
    R.ArtifactRequestRejected, R.ArtifactRangeInvalid, R.ArtifactEncodingUnsupported, R.ArtifactSchemeUnsupported,
    R.OciAuthUnsupported, R.OciAuthRejected, R.OciCredentialHelperMissing, R.OciCredentialHelperFailed,
    # disk, state directory, runtime, agent (artifacts.py, state.py, apply.py, runtime/, cancel.py)
    R.DiskFull, R.StoreWriteFailed, R.StateWriteFailed, R.StateLocked, R.StateCorrupt, R.StateOfOtherSite,
    R.RuntimeNotServing, R.RuntimeStartFailed, R.ListenFailed, R.AgentStopping, R.ProfileUnreadable,
    R.EvaluationDataInvalid,  # the site's own labeled data (runtime/evaluation.py): never evidence against a version
    R.NoExecutionProvider,
    R.CanaryProgressMismatch, R.CanaryIsActive, R.NoActiveVersion, R.NoCanary, R.InvalidWeight,
    # what the plan cannot resolve for this site (plan.py)
    R.SiteNotInFleet, R.ModelNotFound, R.VersionNotFound, R.NoMatchingArtifact, R.FlagEvaluationFailed,
    # the fleet repo, the status channels and local keys: the site as a whole, never one version
    R.SourceUnreachable, R.HeadBeaconFailed, R.SourceFetchFailed, R.SourceCacheCorrupt, R.BranchNotFound, R.RevisionNotFound,
    R.GitCommandFailed, R.DubiousOwnership, R.PermissionDenied,
    R.InvalidCommitId, R.FileUnreadable, R.InvalidManifests, R.HistoryRewritten,
    R.CommitUnsigned, R.CommitSignatureInvalid, R.CommitSignerNotAllowed, R.CommitPolicyInvalid,
    R.StatusFetchFailed, R.StatusPushFailed, R.StatusChannelUnreachable, R.ForgeRejected, R.ForgeTokenMissing, R.ForgeUnavailable,
    R.SummaryRepoEmpty, R.SummaryBucketEmpty, R.RecordsBucketMissing,
    R.SigningKeyInvalid, R.KeyPasswordWrong, R.SignatureMissing,
    # batch runs: the site's directories and the Deployment's batch section (batch/)
    R.BatchDirectoryUnmapped, R.BatchInputMissing, R.BatchInputMisfit, R.BatchNotInstalled, R.BatchNotScheduled,
    R.BatchRunInProgress,
})


def failure_kind(reason: str) -> FailureKind:
    """``version`` when the reason is evidence against the version, else ``site``; a retired name
    in an older record counts as the reason it became."""
    return "version" if R.RETIRED.get(reason, reason) in VERSION_EVIDENCE else "site"
