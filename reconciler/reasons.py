"""Every reason the agent and the CLI report, each bound to what happens next. A reason is the
stable CamelCase word of a status record, a log line or a refusal (part of the status contract);
its constant here has the same name as its value, so grepping a reason from a record finds this
entry and every place that reports it. ``reconciler.errors`` holds the classes; README's "Status
reasons" table is rendered from this catalogue (``reconciler.devtools.reasons_table``) and a test
keeps them equal.

What happens next, and the error class that says it (a failure), or the state it is reported in
(an outcome the agent returns, not raises)::

    ReconcilerError
    ├── Transient ............ RETRY_NEXT_TICK   the world may fix it (a server down, a full disk, a lock
    │   │                                        held): the agent tries again at the next tick, with backoff
    │   ├── Interrupted ...... RETRY_NOW         a transfer broke off (no answer, a 5xx, a cut connection):
    │   │                                        tried again at once within this ingest, with backoff and
    │   │                                        under its deadline; then, like Transient, the next tick
    │   └── Cancelled ........ RETRY_NEXT_TICK   the agent was asked to stop; the next start resumes
    └── Stalled .............. WAIT_FOR_CHANGE   the same inputs give the same answer (a bad manifest, a bad
        │                                        signature, tampered bytes, failed validation): nothing is
        │                                        tried again until the inputs change (a commit, a key)
        ├── Unplannable ...... WAIT_FOR_CHANGE   the fleet asks what this site cannot do (delivery/plan.py)
        ├── ModelRefused ..... WAIT_FOR_CHANGE   the model fails its interface or cases (runtime/validation.py)
        └── NeedsOperator .... NEEDS_OPERATOR    nothing in Git fixes it and the agent cannot go on: someone
                                                 must fix the site's command line, settings or state
                                                 directory; the agent stops (its record says why where it
                                                 can still be written) and the CLI exits 2
    outcomes (returned) ...... DONE              the site did what was asked
                               RETRY_NEXT_TICK   a rollout or canary waits: looked at again each tick
                               WAIT_FOR_CHANGE   the rollout is aborted until retried on purpose

A reason raised by the release commands (add-version, sign) refuses the command; "wait for a
change" there means: change the inputs and run it again."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Next(Enum):
    RETRY_NOW = "retry now"
    RETRY_NEXT_TICK = "retry next tick"
    WAIT_FOR_CHANGE = "wait for a change"
    NEEDS_OPERATOR = "needs an operator"
    DONE = "nothing: done"


@dataclass(frozen=True)
class Entry:
    reason: str
    next: Next
    meaning: str
    raised: bool  # a failure (an error class) rather than an outcome the agent returns


CATALOGUE: dict[str, Entry] = {}


def _failure(reason: str, next_step: Next, meaning: str) -> str:
    CATALOGUE[reason] = Entry(reason, next_step, meaning, raised=True)
    return reason


def _outcome(reason: str, next_step: Next, meaning: str) -> str:
    CATALOGUE[reason] = Entry(reason, next_step, meaning, raised=False)
    return reason


_NOW, _TICK, _CHANGE, _OPERATOR, _DONE = (Next.RETRY_NOW, Next.RETRY_NEXT_TICK, Next.WAIT_FOR_CHANGE,
                                          Next.NEEDS_OPERATOR, Next.DONE)

# --- retry now: within this ingest, with backoff (Interrupted) ---------------------------------
ArtifactUnavailable = _failure("ArtifactUnavailable", _NOW, "the artifact's host did not answer, or answered 5xx")
ArtifactTruncated = _failure("ArtifactTruncated", _NOW, "the connection broke off before the last byte")
ArtifactStalled = _failure("ArtifactStalled", _NOW, "the download stopped moving, or crawled below the minimum rate")

# --- retry next tick (Transient) ---------------------------------------------------------------
AgentStopping = _failure("AgentStopping", _TICK, "SIGTERM or Ctrl-C cut the work short; the next start resumes")
ArtifactDeadlineExceeded = _failure("ArtifactDeadlineExceeded", _TICK, "the artifact was not fetched within fetch.deadline")
ArtifactUnreadable = _failure("ArtifactUnreadable", _TICK, "a local artifact file or a kept blob cannot be read")
OciCredentialHelperFailed = _failure("OciCredentialHelperFailed", _TICK, "docker's credential helper failed, hung, or answered other than its JSON")
DiskFull = _failure("DiskFull", _TICK, "the state directory has no room for the artifact")
StoreWriteFailed = _failure("StoreWriteFailed", _TICK, "writing a blob into the state directory failed")
StateWriteFailed = _failure("StateWriteFailed", _TICK, "state.json could not be written; the activation was undone")
StatusChannelUnreachable = _failure("StatusChannelUnreachable", _TICK, "the NATS status channel did not answer: no gate is decided on an old view")
ProfileUnreadable = _failure("ProfileUnreadable", _TICK, "the version's reference profile cannot be read at the site; drift is not counted")
BatchRunInProgress = _failure("BatchRunInProgress", _TICK, "another run of the batch deployment holds its lock (Forbid): this one is skipped")
StateLocked = _failure("StateLocked", _TICK, "another agent holds the state directory's lock")
RuntimeStartFailed = _failure("RuntimeStartFailed", _TICK, "the inference server did not start in time")
SourceUnreachable = _failure("SourceUnreachable", _TICK, "git ls-remote of the fleet repo failed")
HeadBeaconFailed = _failure("HeadBeaconFailed", _TICK, "the head beacon did not name a commit (unreachable, an HTTP error, a body without a commit id): this poll ran git ls-remote instead")
SourceFetchFailed = _failure("SourceFetchFailed", _TICK, "git fetch of the fleet repo failed")
SourceCacheCorrupt = _failure("SourceCacheCorrupt", _TICK, "the agent's git cache is broken; it is deleted and fetched anew")
StatusFetchFailed = _failure("StatusFetchFailed", _TICK, "the status records could not be fetched")
StatusPushFailed = _failure("StatusPushFailed", _TICK, "the site's status record could not be pushed")
GitCommandFailed = _failure("GitCommandFailed", _TICK, "a git command failed (git's own words in the message)")
DubiousOwnership = _failure("DubiousOwnership", _TICK, "git refuses a repo of another user: run as its owner or add safe.directory")
PermissionDenied = _failure("PermissionDenied", _TICK, "the agent's user may not read, or not push: grant access")
ForgeUnavailable = _failure("ForgeUnavailable", _TICK, "the forge's API did not answer usefully (after its retries)")

# --- needs an operator: the agent stops (NeedsOperator) ---------------------------------------
ListenFailed = _failure("ListenFailed", _OPERATOR, "the listen address cannot be bound (taken, not local, no permission)")
RuntimeNotServing = _failure("RuntimeNotServing", _OPERATOR, "a running canary needs the inference server: start with --listen")
StateCorrupt = _failure("StateCorrupt", _OPERATOR, "state.json is not a valid state file")
StateOfOtherSite = _failure("StateOfOtherSite", _OPERATOR, "the state directory belongs to another site")
TrustKeyUnreadable = _failure("TrustKeyUnreadable", _OPERATOR, "a trust key file named in the settings cannot be read")
StatusKeyUnreadable = _failure("StatusKeyUnreadable", _OPERATOR, "the site's own status signing key (statusKeys in site.yaml) cannot be read")
SummaryRepoEmpty = _failure("SummaryRepoEmpty", _OPERATOR, "the --summary-repo given holds no roll-up of any deployment: not the summaryRepo the sites write to (the command exits 2)")
RecordsBucketMissing = _failure("RecordsBucketMissing", _OPERATOR, "the NATS records bucket read (status or report --nats-server) does not exist: not the bucket the sites write to, which the read does not create (the command exits 2)")
SummaryBucketEmpty = _failure("SummaryBucketEmpty", _OPERATOR, "the NATS summaries bucket read (plan --nats-server, a trial run of a nats: site) does not exist or holds no summary of any deployment: not the bucket the sites write to (the command exits 2)")

# --- wait for a change: the fleet repo and the plan (Stalled, Unplannable) --------------------
InvalidManifests = _failure("InvalidManifests", _CHANGE, "the fleet's manifests do not validate")
HistoryRewritten = _failure("HistoryRewritten", _CHANGE, "the new head does not descend from the applied commit (--accept-history)")
BranchNotFound = _failure("BranchNotFound", _CHANGE, "the fleet repo has no such branch")
RevisionNotFound = _failure("RevisionNotFound", _CHANGE, "the repo has no such commit")
InvalidCommitId = _failure("InvalidCommitId", _CHANGE, "not a full commit id")
SiteNotInFleet = _failure("SiteNotInFleet", _CHANGE, "the fleet has no Site of this name")
ModelNotFound = _failure("ModelNotFound", _CHANGE, "a Deployment names a Model the fleet does not define")
VersionNotFound = _failure("VersionNotFound", _CHANGE, "the Model has no such version")
NoMatchingArtifact = _failure("NoMatchingArtifact", _CHANGE, "no artifact of the version fits this site's labels")
FlagEvaluationFailed = _failure("FlagEvaluationFailed", _CHANGE, "a flag the Deployment depends on does not evaluate")
CommitUnsigned = _failure("CommitUnsigned", _CHANGE, "a commit to apply is not signed (commit policy)")
CommitSignatureInvalid = _failure("CommitSignatureInvalid", _CHANGE, "a commit's signature does not verify")
CommitSignerNotAllowed = _failure("CommitSignerNotAllowed", _CHANGE, "a commit is signed by a key the policy does not allow")
CommitPolicyInvalid = _failure("CommitPolicyInvalid", _CHANGE, "the commit policy's signers or keyring cannot be used")
UnsafeRepoPath = _failure("UnsafeRepoPath", _CHANGE, "an artifact path leads out of the repository through a link")

# --- wait for a change: the artifact's bytes and where they come from --------------------------
ArtifactNotFound = _failure("ArtifactNotFound", _CHANGE, "the artifact's URI names nothing (404, no such file)")
ArtifactUriInvalid = _failure("ArtifactUriInvalid", _CHANGE, "the artifact's URI is malformed or carries credentials")
ArtifactPathEscapes = _failure("ArtifactPathEscapes", _CHANGE, "a repo-relative URI leads outside the repository")
ArtifactSchemeUnsupported = _failure("ArtifactSchemeUnsupported", _CHANGE, "sites cannot fetch this URI scheme")
ArtifactDigestMismatch = _failure("ArtifactDigestMismatch", _CHANGE, "the bytes do not have the digest the manifest pins")
ArtifactSizeMismatch = _failure("ArtifactSizeMismatch", _CHANGE, "the bytes do not have the size the manifest says")
ArtifactTooLarge = _failure("ArtifactTooLarge", _CHANGE, "more bytes than the manifest or fetch.maxBytes allows")
ArtifactIsLfsPointer = _failure("ArtifactIsLfsPointer", _CHANGE, "the file is a Git LFS pointer, not the model")
DigestInvalid = _failure("DigestInvalid", _CHANGE, "a digest is not sha256:<64 hex>")
ArtifactRedirectRefused = _failure("ArtifactRedirectRefused", _CHANGE, "a redirect this site does not follow")
ArtifactRequestRejected = _failure("ArtifactRequestRejected", _CHANGE, "the host refuses the request (4xx)")
ArtifactRangeInvalid = _failure("ArtifactRangeInvalid", _CHANGE, "the host answers a resumed download wrongly")
ArtifactEncodingUnsupported = _failure("ArtifactEncodingUnsupported", _CHANGE, "the host compresses though asked not to")
ArtifactTlsFailed = _failure("ArtifactTlsFailed", _CHANGE, "the host's certificate is not trusted")
ArtifactProxyInvalid = _failure("ArtifactProxyInvalid", _CHANGE, "$http_proxy/$https_proxy is not an http:// proxy")
ArtifactProxyRejected = _failure("ArtifactProxyRejected", _CHANGE, "the proxy refuses the tunnel or wants credentials")
ArtifactAuthInsecure = _failure("ArtifactAuthInsecure", _CHANGE, "credentials would go over plain http")
ArtifactAuthMissing = _failure("ArtifactAuthMissing", _CHANGE, "the variable holding a host's credentials is not set")
ArtifactAuthInvalid = _failure("ArtifactAuthInvalid", _CHANGE, "a host's credentials contain control characters")
TlsCaBundleInvalid = _failure("TlsCaBundleInvalid", _CHANGE, "fetch.caBundle cannot be loaded")

OciManifestInvalid = _failure("OciManifestInvalid", _CHANGE, "the registry's manifest is not a manifest or index a site can read")
OciManifestDigestMismatch = _failure("OciManifestDigestMismatch", _CHANGE, "the manifest's bytes are not the digest the URI pins")
OciLayerNotFound = _failure("OciLayerNotFound", _CHANGE, "no layer (or file of a tar layer) of the manifest is the artifact")
OciLayerAmbiguous = _failure("OciLayerAmbiguous", _CHANGE, "several layers could be the artifact and nothing names one")
OciLayerUnsupported = _failure("OciLayerUnsupported", _CHANGE, "the layer's media type is none a site can read")
OciPlatformMissing = _failure("OciPlatformMissing", _CHANGE, "the image index has no manifest for the site's platform")
OciArchiveUnsafe = _failure("OciArchiveUnsafe", _CHANGE, "a tar layer has '..', absolute paths, links out or devices: refused whole")
OciArchiveInvalid = _failure("OciArchiveInvalid", _CHANGE, "a tar layer cannot be read, or unpacks past maxBytes")
OciAuthUnsupported = _failure("OciAuthUnsupported", _CHANGE, "the registry asks for an authentication scheme sites do not speak")
OciAuthRejected = _failure("OciAuthRejected", _CHANGE, "the registry refused the site's credentials or token")
OciCredentialHelperMissing = _failure("OciCredentialHelperMissing", _CHANGE, "the docker config names a credential helper that is not on PATH")

# --- wait for a change: signatures and trust --------------------------------------------------
SignatureNotFound = _failure("SignatureNotFound", _CHANGE, "the registry holds no signature of the artifact's manifest")
SignatureManifestMismatch = _failure("SignatureManifestMismatch", _CHANGE, "the registry's signature is of another manifest")
NoTrustedKeys = _failure("NoTrustedKeys", _CHANGE, "the artifact is signed with a key and the site trusts no keys")
NoTrustedIdentities = _failure("NoTrustedIdentities", _CHANGE, "the artifact is signed keyless and the site trusts no identities")
NoTrustedSigners = _failure("NoTrustedSigners", _CHANGE, "the site has no trust roots the version's signers allow")
SignatureInvalid = _failure("SignatureInvalid", _CHANGE, "the signature verifies under none of the site's keys")
SignatureMalformed = _failure("SignatureMalformed", _CHANGE, "the signature or bundle cannot be parsed")
SignatureFormatUnsupported = _failure("SignatureFormatUnsupported", _CHANGE, "a signature format or algorithm not supported")
SignatureMissing = _failure("SignatureMissing", _CHANGE, "the signature file cannot be read")
BundleDigestMismatch = _failure("BundleDigestMismatch", _CHANGE, "the bundle signs other bytes than the artifact")
BundleVerificationFailed = _failure("BundleVerificationFailed", _CHANGE, "the keyless bundle does not verify")
StatementMissingFile = _failure("StatementMissingFile", _CHANGE, "the signed statement does not list the artifact")
CertificateIdentityMismatch = _failure("CertificateIdentityMismatch", _CHANGE, "the certificate names another identity")
CertificateIssuerMismatch = _failure("CertificateIssuerMismatch", _CHANGE, "the certificate comes from another issuer")
TrustKeyInvalid = _failure("TrustKeyInvalid", _CHANGE, "a trust key is not a P-256 PEM public key")
TrustRootInvalid = _failure("TrustRootInvalid", _CHANGE, "the Sigstore trusted root cannot be loaded")
SigningKeyInvalid = _failure("SigningKeyInvalid", _CHANGE, "the signing key is not a usable private key")
SigningKeyNotTrusted = _failure("SigningKeyNotTrusted", _CHANGE, "the signature would not verify under the given trust keys")
KeyPasswordWrong = _failure("KeyPasswordWrong", _CHANGE, "the password does not open the private key")
FileUnreadable = _failure("FileUnreadable", _CHANGE, "a file the command was given cannot be read")

# --- wait for a change: validation, serving and the canary ------------------------------------
ValidationFailed = _failure("ValidationFailed", _CHANGE, "the version's validation cases fail")
ValidationCrashed = _failure("ValidationCrashed", _CHANGE, "the model crashed the validation child")
ValidationTimeout = _failure("ValidationTimeout", _CHANGE, "the validation took longer than allowed")
ModelInterfaceMismatch = _failure("ModelInterfaceMismatch", _CHANGE, "the model does not fit the Model's interface")
ModelLoadFailed = _failure("ModelLoadFailed", _CHANGE, "onnxruntime cannot load the model")
CanaryIsActive = _failure("CanaryIsActive", _CHANGE, "the canary's version is the active one")
CanaryProgressMismatch = _failure("CanaryProgressMismatch", _CHANGE, "the canary's progress belongs to other steps")
NoActiveVersion = _failure("NoActiveVersion", _CHANGE, "a canary operation on a deployment with nothing active")
NoCanary = _failure("NoCanary", _CHANGE, "a canary operation on a deployment with no canary")
InvalidWeight = _failure("InvalidWeight", _CHANGE, "a canary weight that is not a whole percentage")
ErrorRateTooHigh = _failure("ErrorRateTooHigh", _CHANGE, "the canary's error rate is above maxErrorRate")
LatencyTooHigh = _failure("LatencyTooHigh", _CHANGE, "the canary's p99 latency is above maxLatencyP99")
DisagreesWithStable = _failure("DisagreesWithStable", _CHANGE, "the canary agrees with stable less than minAgreement")
InsufficientTraffic = _failure("InsufficientTraffic", _CHANGE, "too few requests by maxWait, and onMaxWait says fail")
PredictionDriftTooHigh = _failure("PredictionDriftTooHigh", _CHANGE, "the canary's predictions drifted from stable's beyond maxPredictionDrift")
ProfileInvalid = _failure("ProfileInvalid", _CHANGE, "the version's reference profile is not a valid profile")
ProfileMismatch = _failure("ProfileMismatch", _CHANGE, "the reference profile does not describe the model's tensors")
BatchDirectoryUnmapped = _failure("BatchDirectoryUnmapped", _CHANGE, "site.yaml maps no directory to the batch input or output name")
BatchInputMissing = _failure("BatchInputMissing", _CHANGE, "the batch input directory does not exist")
BatchInputMisfit = _failure("BatchInputMisfit", _CHANGE, "the Deployment's batch input does not fit the model; no file was touched")
BatchNotInstalled = _failure("BatchNotInstalled", _CHANGE, "a batch run for a deployment with no active version here")
BatchNotScheduled = _failure("BatchNotScheduled", _CHANGE, "no batch section for that deployment at this site")
NoExecutionProvider = _failure("NoExecutionProvider", _CHANGE, "none of site.yaml's executionProviders is in this onnxruntime")
ForgeRejected = _failure("ForgeRejected", _CHANGE, "the forge refuses the request")
ForgeTokenMissing = _failure("ForgeTokenMissing", _CHANGE, "the forge token's variable is not set")
EvaluationDataInvalid = _failure("EvaluationDataInvalid", _CHANGE, "the site's labeled evaluation data is missing, unreadable or does not fit the model: the version is served unscored")

# --- wait for a change: the release commands (add-version) ------------------------------------
ArtifactCheckFailed = _failure("ArtifactCheckFailed", _CHANGE, "the sites would refuse the new version")
ArtifactExists = _failure("ArtifactExists", _CHANGE, "the artifact's file exists already")
ArtifactMissing = _failure("ArtifactMissing", _CHANGE, "the model file is missing or empty")
CasesInvalid = _failure("CasesInvalid", _CHANGE, "the validation cases file is not a list of cases")
CasesUnreadable = _failure("CasesUnreadable", _CHANGE, "the validation cases file cannot be read")
FleetInvalid = _failure("FleetInvalid", _CHANGE, "the fleet would not validate")
ModelExists = _failure("ModelExists", _CHANGE, "the Model exists already")
ModelFileLayout = _failure("ModelFileLayout", _CHANGE, "the Model file is laid out in a way add-version cannot append to")
ModelFileUnreadable = _failure("ModelFileUnreadable", _CHANGE, "the Model file is not YAML that can be edited")
ModelInterfaceUnsupported = _failure("ModelInterfaceUnsupported", _CHANGE, "the model has tensors of unsupported types")
UnknownModel = _failure("UnknownModel", _CHANGE, "no Model of that name")
VersionExists = _failure("VersionExists", _CHANGE, "the Model has that version already")

# --- outcomes: done ---------------------------------------------------------------------------
Converged = _outcome("Converged", _DONE, "the site serves what the fleet asks")
Activated = _outcome("Activated", _DONE, "the version was verified, validated and switched to")
Promoted = _outcome("Promoted", _DONE, "the canary passed its steps and serves all traffic")
NoCanarySteps = _outcome("NoCanarySteps", _DONE, "no canary steps: the validated version takes all traffic")
RolledBack = _outcome("RolledBack", _DONE, "back to the version served before (a revert), from the kept blob")
NotTargeted = _outcome("NotTargeted", _DONE, "the fleet no longer asks this site for the deployment: removed")
NoDrift = _outcome("NoDrift", _DONE, "the live inputs and outputs look like the version's reference profile")
DriftDetected = _outcome("DriftDetected", _DONE, "three windows in a row unlike the reference profile: informs, never rolls back")
BatchRunFinished = _outcome("BatchRunFinished", _DONE, "a batch run scored its files (its summary is in the record)")
NewVersion = _outcome("NewVersion", _DONE, "a deploy of a version this site does not serve")
VersionRedefined = _outcome("VersionRedefined", _DONE, "the same version with other bytes was deployed again")
ChecksChanged = _outcome("ChecksChanged", _DONE, "the served version's checks changed and passed again")
FirstWave = _outcome("FirstWave", _DONE, "the wave gate: this wave goes first")
GateHeld = _outcome("GateHeld", _DONE, "the wave gate: the earlier waves are healthy and baked")
EvaluationScored = _outcome("EvaluationScored", _DONE, "the version (and the one it replaces) scored on the site's labeled data")
OnnxRuntimeWarning = _outcome("OnnxRuntimeWarning", _DONE, "a log line: what onnxruntime said about a validated model")

# --- outcomes: looked at again next tick ------------------------------------------------------
HeadBeaconStale = _outcome("HeadBeaconStale", _TICK, "the head beacon named another commit than git ls-remote: git's counts, and git is asked again at the backstop or when the beacon moves")
StatusRecordIgnored = _outcome("StatusRecordIgnored", _TICK, "a site's status record whose signature does not verify against its Site's keys: not counted")
InventoryFactRefused = _outcome("InventoryFactRefused", _TICK, "a line of an inventory.d executable is no key=value fact: left out")
InventoryFailed = _outcome("InventoryFailed", _TICK, "the site's inventory could not be collected: the last one stays")
NotifyFailed = _outcome("NotifyFailed", _TICK, "systemd's NOTIFY_SOCKET did not take a readiness message")
WatchdogWithheld = _outcome("WatchdogWithheld", _TICK, "the agent showed no sign of life within the bound: the systemd watchdog is not pinged, so systemd restarts it")
ExecutionProviderUnavailable = _outcome("ExecutionProviderUnavailable", _TICK, "an executionProvider of site.yaml is not in this onnxruntime: skipped")
EvaluationPending = _outcome("EvaluationPending", _TICK, "the evaluation gate: too few earlier sites or examples have reported scores yet")
DriftedSites = _outcome("DriftedSites", _TICK, "more sites of the earlier waves report drift than maxDriftedSites: the wave waits")
BatchFileFailed = _outcome("BatchFileFailed", _TICK, "an input file failed as a whole; the next runs try it again")
CanaryInProgress = _outcome("CanaryInProgress", _TICK, "a canary runs: its next step is decided each tick")
WeightSet = _outcome("WeightSet", _TICK, "a canary step set the canary's weight")
Paused = _outcome("Paused", _TICK, "a canary pause step waits its duration")
Analyzing = _outcome("Analyzing", _TICK, "a canary analysis measures its window")
WaitingForTraffic = _outcome("WaitingForTraffic", _TICK, "too few requests for the analysis yet")
WaitingForEarlierWaves = _outcome("WaitingForEarlierWaves", _TICK, "the wave gate: earlier waves are not healthy enough yet")
Baking = _outcome("Baking", _TICK, "the wave gate held; the bake time has not passed yet")
ProgressDeadlineExceeded = _outcome("ProgressDeadlineExceeded", _TICK, "earlier sites did not report in time (unreported: fail)")
NotInAnyWave = _outcome("NotInAnyWave", _TICK, "the site is in none of the rollout's waves")
OutsideMaintenanceWindow = _outcome("OutsideMaintenanceWindow", _TICK, "fetched and verified now, activated in the next window")
NeverReported = _outcome("NeverReported", _TICK, "the status matrix: the site has written no record yet")
ForgeStatus = _outcome("ForgeStatus", _TICK, "a forge status that names no reason of its own")

# --- outcomes: aborted until retried on purpose -----------------------------------------------
BatchFileMovedAside = _outcome("BatchFileMovedAside", _CHANGE, "an input file failed maxRetries runs and was moved to .failed/")
FailureThresholdReached = _outcome("FailureThresholdReached", _CHANGE, "the rollout's failed share reached failureThreshold")
EvaluationTooFewExamples = _outcome("EvaluationTooFewExamples", _CHANGE, "fewer labeled examples than the rounding quantum (10): no scores reported until the data grows")
EvaluationBelowMinimum = _outcome("EvaluationBelowMinimum", _CHANGE, "the fleet metric of the earlier waves misses the evaluation gate: the rollout stops at this wave until the Deployment changes")
RolloutAborted = _outcome("RolloutAborted", _CHANGE, "the rollout is aborted: `reconciler rollout retry` restarts it")

# Names once written, read in older status records: the reason each now reports as.
RETIRED: dict[str, str] = {"DigestMismatch": ArtifactDigestMismatch}

