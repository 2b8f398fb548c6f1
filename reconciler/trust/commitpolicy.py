"""Commit-signature policy for the fleet repo, as Flux's ``verify``: a site applies a commit only
when it carries a valid signature by an allowed signer, an SSH key named in an allowed-signers
file or an OpenPGP key in a keyring. Both files come from the site's own config, never from the
repository they protect.

Which commits must be signed (``mode``), counting from the last applied commit:
- ``head``: the commit to be applied only.
- ``first-parent``: every commit on the first-parent chain since the last applied one (what
  ``git log --first-parent`` shows on the branch). A signed merge vouches for its whole tree, so the
  commits its second parent brings in are not checked.
- ``all``: every commit in ``applied..head``, side branches included.
With no applied commit yet (first reconcile), with ``head`` already applied, or when the applied
commit is not in the cache, only ``head`` is checked.

``allowUnsignedMerges`` (first-parent and all) lets the merge commits a forge writes without a
signature through. An unsigned merge vouches for nothing, so it passes only if its tree is exactly
what a clean merge of its two parents gives (it adds no change of its own) and, in first-parent
mode, the commits it brings in are signed themselves. Without those two rules anyone who can push
(or a compromised git server) could bring any tree in under an unsigned merge.

Verification is git's own (``%G?`` of ``git log``), run without user or system git config and
with a private GNUPGHOME holding only the policy's keyring, so nothing else on the machine widens
the set of signers. What counts as good:
- SSH: ``G`` with a principal: git says so only when ssh-keygen found the key in the
  allowed-signers file and the signature verifies for namespace "git" at the commit's date
  (``valid-after`` / ``valid-before`` are honoured). A key not in the file is ``U``, no principal.
- OpenPGP: ``G`` or ``U`` from a (sub)key whose fingerprint the keyring import listed. ``U``
  (good signature, unknown validity) is gpg's normal answer here: the private GNUPGHOME holds no
  ultimately trusted key, so the web of trust never makes a key "valid". Being in the keyring is
  what allows a key.
- Refused: ``N`` unsigned, ``B`` bad (the commit is not what was signed), ``X`` expired signature,
  ``Y`` expired key, ``R`` revoked key, ``E`` cannot be checked (for OpenPGP: key not in keyring).
The signer is not matched against the commit's author or committer (neither git nor Flux does)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import shlex
import struct
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.gitdoor.git import ISOLATED_ENV, GitError
from reconciler.gitdoor.source import GitSource, git_error_message
from reconciler.settings import CommitPolicy

# Fields git computes, one record per commit; the signer (a name from our own keyring or
# allowed-signers file) goes last so that no text in it can shift another field.
_FORMAT = "%H%x1f%P%x1f%T%x1f%G?%x1f%GK%x1f%GF%x1f%GS"
_FIELDS = 7
_BROKEN = {
    "B": "has a bad signature (the commit is not what was signed)",
    "X": "has an expired signature",
    "Y": "is signed by an expired key",
    "R": "is signed by a revoked key",
}
_GPG_TIMEOUT = 60.0


def verify_commits(source: GitSource, policy: CommitPolicy, applied: str | None, head: str) -> list[str]:
    """The commits the policy checked, oldest first, all good; otherwise the first bad one
    (oldest first) is raised as Stalled. ``head`` must be fetched into ``source``."""
    if not source.has_commit(head):
        raise ValueError(f"commit {head} is not in the cache; fetch it first")
    signers = _Signers.load(policy)
    if policy.mode == "head" or applied is None or applied == head or not source.has_commit(applied):
        return _verify(source, signers, ["-1", head], first_parent=False, applied=None)
    first_parent = policy.mode == "first-parent"
    return _verify(source, signers, [head, "--not", applied], first_parent, applied)


@dataclass(frozen=True)
class SignatureVerdict:
    """What git says of one commit's signature, and whether a policy allows its signer."""

    letter: str  # git's %G?
    key: str
    signer: str
    allowed: bool


# Reports judge signatures without a policy too: then no signer is trusted. Built unvalidated
# because a real policy must name a trust root; this one is never given to verify_commits.
_TRUSTS_NO_ONE = CommitPolicy.model_construct()


def signature_verdicts(source: GitSource, commits: list[str],
                       policy: CommitPolicy | None) -> dict[str, SignatureVerdict]:
    """For reports such as the audit trail: each commit's signature as verify_commits checks it
    (same isolation from the machine's git and gpg config). With no policy a valid signature is
    by a signer nobody allowed."""
    if not commits:
        return {}
    signers = _Signers.load(policy or _TRUSTS_NO_ONE)
    checks = _signature_checks(source, signers, ["--no-walk=unsorted", *commits])
    return {c.sha: SignatureVerdict(c.result, c.key, c.signer, signers.problem(c) is None) for c in checks}


@dataclass(frozen=True)
class _Checked:
    sha: str
    parents: list[str]
    tree: str
    result: str  # git's %G? letter
    key: str  # fingerprint (SSH: "SHA256:..."), or the key id when git has no fingerprint
    signer: str  # SSH principal or OpenPGP user id; empty when the key is unknown


def _verify(source: GitSource, signers: _Signers, revs: list[str], first_parent: bool,
            applied: str | None) -> list[str]:
    walk = ["--first-parent", *revs] if first_parent else revs
    verified: list[str] = []
    for commit in _signature_checks(source, signers, walk):
        problem = signers.problem(commit)
        if problem is None:
            verified.append(commit.sha)
            continue
        describe = f"commit {commit.sha[:12]} by {source.commit_info(commit.sha).author}"
        if commit.result != "N" or not signers.policy.allow_unsigned_merges or len(commit.parents) != 2:
            raise Stalled(problem[0], f"{describe} {problem[1]}")
        _require_clean_merge(source, commit, describe)
        if first_parent:  # in "all" mode the merged commits are in the walk already
            first, merged = commit.parents
            verified += _verify(source, signers, [merged, "--not", first, *([applied] if applied else [])],
                                first_parent=False, applied=applied)
        verified.append(commit.sha)
    return verified


def _signature_checks(source: GitSource, signers: _Signers, revs: list[str]) -> list[_Checked]:
    output = source.git.log_bytes("-z", "--reverse", f"--format={_FORMAT}", *revs, "--", env=signers.git_env())
    checks = []
    for record in output.decode("utf-8", "replace").split("\0"):
        if not record.strip():
            continue
        sha, parents, tree, result, key_id, fingerprint, signer = record.strip("\n").split("\x1f", _FIELDS - 1)
        checks.append(_Checked(sha, parents.split(), tree, result, fingerprint or key_id, signer))
    return checks


def _require_clean_merge(source: GitSource, merge: _Checked, describe: str) -> None:
    try:
        merged_tree = source.git.merge_tree(*merge.parents)
    except GitError as error:
        if error.status != 1:  # 1: the parents conflict, so no merge of them is clean
            raise Stalled(reasons.CommitPolicyInvalid, "allowUnsignedMerges needs `git merge-tree --write-tree` "
                          f"(git 2.38 or newer): {git_error_message(error)}") from error
        merged_tree = ""
    if merged_tree != merge.tree:
        raise Stalled(reasons.CommitUnsigned, f"{describe} is an unsigned merge whose tree is not the clean merge "
                      "of its parents; allowUnsignedMerges accepts only merges that add no change of their own")


@dataclass(frozen=True)
class _Signers:
    policy: CommitPolicy
    allowed_signers: str  # what git is given; an empty file when the policy has none
    keyring: _Keyring

    @classmethod
    def load(cls, policy: CommitPolicy) -> _Signers:
        allowed = _checked_allowed_signers(policy.ssh_allowed_signers) if policy.ssh_allowed_signers else os.devnull
        return cls(policy, allowed, _keyring(policy.gpg_keyring))

    def git_env(self) -> dict[str, str]:
        # The signature check must depend on the policy alone: no user or system git config
        # (gpg.program, gpg.minTrustLevel) may change its answer.
        return {
            **ISOLATED_ENV,
            # git needs an allowed-signers file to check an SSH signature at all (unset, git 2.39 aborts)
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "gpg.ssh.allowedSignersFile",
            "GIT_CONFIG_VALUE_0": self.allowed_signers,
            "GNUPGHOME": self.keyring.home,
        }

    def problem(self, commit: _Checked) -> tuple[str, str] | None:
        """None when the commit is signed by an allowed signer, else (reason, what is wrong)."""
        if commit.result == "N":
            return reasons.CommitUnsigned, "is not signed"
        if commit.result in _BROKEN:
            return reasons.CommitSignatureInvalid, f"{_BROKEN[commit.result]}: key {commit.key or 'unknown'}"
        if not commit.key:
            return reasons.CommitSignatureInvalid, (f"has a signature git cannot check (%G? {commit.result}); "
                                                    "are gpg and ssh-keygen installed?")
        if commit.key.startswith("SHA256:"):
            if commit.result == "G" and commit.signer:
                return None
            where = (f"allowed signers {self.policy.ssh_allowed_signers}" if self.policy.ssh_allowed_signers
                     else "the policy (it has no sshAllowedSigners)")
        else:
            if commit.result in ("G", "U") and commit.key in self.keyring.fingerprints:
                return None
            where = (f"keyring {self.policy.gpg_keyring}" if self.policy.gpg_keyring
                     else "the policy (it has no gpgKeyring)")
        return reasons.CommitSignerNotAllowed, f"is signed by key {commit.key}, which is not in {where}"


def _checked_allowed_signers(path: Path) -> str:
    """The file as git will read it. ssh-keygen skips lines it cannot parse and treats a missing
    file as empty, so a typo would silently disallow a signer: refuse such a file instead."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise Stalled(reasons.CommitPolicyInvalid, f"cannot read allowed signers {path}: {error}") from error
    entries = 0
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not _names_a_public_key(line):
            raise Stalled(reasons.CommitPolicyInvalid, f"{path}:{number}: not an allowed-signers entry "
                          "(want: principals [options] key-type base64-key [comment])")
        entries += 1
    if entries == 0:
        raise Stalled(reasons.CommitPolicyInvalid, f"allowed signers {path} names no signer")
    return str(path.resolve())


def _names_a_public_key(line: str) -> bool:
    try:
        tokens = shlex.split(line)
    except ValueError:  # an unbalanced quote
        return False
    # A key follows at least the principals; its blob starts with its own type name.
    return any(_is_key_blob(kind, blob) for kind, blob in zip(tokens[1:], tokens[2:], strict=False))


def _is_key_blob(kind: str, blob: str) -> bool:
    """Whether ``blob`` is an SSH public key of type ``kind``: in the wire format every key type
    uses, a run of length-prefixed fields, the first its type name, then the key itself."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except binascii.Error:
        return False
    fields, offset = [], 0
    while offset + 4 <= len(raw):
        (length,) = struct.unpack_from(">I", raw, offset)
        fields.append(raw[offset + 4:offset + 4 + length])
        offset += 4 + length
    return offset == len(raw) and len(fields) >= 2 and fields[0] == kind.encode()


@dataclass(frozen=True)
class _Keyring:
    home: str  # a GNUPGHOME holding only the policy's public keys
    fingerprints: frozenset[str]  # of every primary key and subkey imported


# Importing a keyring costs a gpg run or two: keep one home per keyring content for the life of the
# process (never removed early, since another thread may be verifying with it; a site sees only a
# handful of keyring versions). The temporary directories go when the process ends.
_keyrings: dict[str, tuple[tempfile.TemporaryDirectory[str], _Keyring]] = {}
_keyrings_lock = threading.Lock()


def _keyring(path: Path | None) -> _Keyring:
    """The GNUPGHOME for this keyring; with no keyring an empty one, so that the user's own
    ~/.gnupg never vouches for a commit."""
    data = _read_keyring(path) if path is not None else b""
    digest = hashlib.sha256(data).hexdigest()
    with _keyrings_lock:
        if digest not in _keyrings:
            scratch = tempfile.TemporaryDirectory(prefix="reconciler-gnupg-")
            try:
                _keyrings[digest] = (scratch, _import_keyring(path, data, scratch.name))
            except BaseException:
                scratch.cleanup()
                raise
        return _keyrings[digest][1]


def _read_keyring(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise Stalled(reasons.CommitPolicyInvalid, f"cannot read gpg keyring {path}: {error}") from error
    if not data:
        raise Stalled(reasons.CommitPolicyInvalid, f"gpg keyring {path} is empty")
    return data


def _import_keyring(path: Path | None, data: bytes, home: str) -> _Keyring:
    # Verifying needs neither gpg-agent nor dirmngr; never starting them leaves no daemon behind.
    Path(home, "gpg.conf").write_text("no-autostart\n")
    if not data:
        return _Keyring(home, frozenset())
    _run_gpg(path, home, ["--import"], data)
    listing = _run_gpg(path, home, ["--with-colons", "--fixed-list-mode", "--list-keys"], b"")
    fingerprints = frozenset(
        line.split(":")[9] for line in listing.decode("utf-8", "replace").splitlines() if line.startswith("fpr:")
    )
    if not fingerprints:
        raise Stalled(reasons.CommitPolicyInvalid, f"gpg keyring {path} holds no public key")
    return _Keyring(home, fingerprints)


def _run_gpg(path: Path | None, home: str, args: list[str], stdin: bytes) -> bytes:
    command = ["gpg", "--batch", "--no-tty", "--quiet", *args]
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=_GPG_TIMEOUT,
                              env={**os.environ, "GNUPGHOME": home})
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Stalled(reasons.CommitPolicyInvalid, f"gpg keyring {path}: cannot run gpg: {error}") from error
    if done.returncode != 0:
        lines = [line for line in done.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        raise Stalled(reasons.CommitPolicyInvalid,
                      f"gpg keyring {path}: {lines[-1] if lines else f'gpg exit status {done.returncode}'}")
    return done.stdout

