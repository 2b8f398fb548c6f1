"""Commit-signature policy against real git, real ssh-keygen keys and real gpg keys: commits are
signed the way a user signs them (``git commit -S``), merges made the way a forge makes them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import ValidationError

from reconciler.devtools.githttp import run_git
from reconciler.errors import Stalled
from reconciler.gitdoor.source import GitSource
from reconciler.settings import CommitPolicy
from reconciler.trust.commitpolicy import verify_commits

AUTHOR = "reconciler demo <demo@localhost>"  # the identity tests/conftest.py gives every commit

needs_ssh = pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                               reason="ssh-keygen is not installed (Debian package openssh-client)")
needs_gpg = pytest.mark.skipif(shutil.which("gpg") is None or shutil.which("gpgconf") is None,
                               reason="gpg is not installed (Debian package gnupg)")


@dataclass(frozen=True)
class Signer:
    """How `git commit -S` signs as one key."""

    config: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: str  # "ssh-ed25519 AAAA..."
    fingerprint: str  # "SHA256:..."

    @property
    def signer(self) -> Signer:
        return Signer(("-c", "gpg.format=ssh", "-c", f"user.signingkey={self.private}"))


@dataclass(frozen=True)
class GpgKey:
    home: str  # holds the secret key
    fingerprint: str
    public: bytes  # ASCII-armored export

    @property
    def signer(self) -> Signer:
        return Signer(("-c", f"user.signingkey={self.fingerprint}"), {"GNUPGHOME": self.home})


def run(*command: str, home: str | None = None, stdin: bytes = b"") -> bytes:
    env = None if home is None else {**os.environ, "GNUPGHOME": home}
    return subprocess.run(command, input=stdin, env=env, capture_output=True, check=True).stdout


def make_ssh_key(folder: Path, name: str) -> SshKey:
    private = folder / name
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(private))
    public = " ".join(private.with_suffix(".pub").read_text().split()[:2])
    listing = run("ssh-keygen", "-l", "-E", "sha256", "-f", str(private.with_suffix(".pub"))).decode()
    return SshKey(private, public, listing.split()[1])


def make_gpg_key(name: str) -> GpgKey:
    # A short home: gpg-agent's socket path must fit in a sockaddr_un.
    home = tempfile.mkdtemp(prefix="rcgpg-")
    run("gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.org>",
        "ed25519", "sign", "never", home=home)
    colons = run("gpg", "--batch", "--with-colons", "--list-keys", home=home).decode()
    fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
    public = run("gpg", "--batch", "--armor", "--export", fingerprint, home=home)
    return GpgKey(home, fingerprint, public)


def revoked_copy(key: GpgKey) -> bytes:
    """The key's public part with its revocation certificate applied (gpg made one at creation)."""
    certificate = (Path(key.home) / "openpgp-revocs.d" / f"{key.fingerprint}.rev").read_bytes()
    certificate = certificate.replace(b":-----BEGIN PGP PUBLIC KEY BLOCK", b"-----BEGIN PGP PUBLIC KEY BLOCK")
    with tempfile.TemporaryDirectory(prefix="rcgpg-") as scratch:
        Path(scratch, "gpg.conf").write_text("no-autostart\n")
        run("gpg", "--batch", "--quiet", "--import", home=scratch, stdin=key.public + certificate)
        return run("gpg", "--batch", "--armor", "--export", key.fingerprint, home=scratch)


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SshKey]:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed (Debian package openssh-client)")
    folder = tmp_path_factory.mktemp("ssh-keys")
    return {name: make_ssh_key(folder, name) for name in ("alice", "mallory")}


@pytest.fixture(scope="session")
def gpg_keys() -> Iterator[dict[str, GpgKey]]:
    if shutil.which("gpg") is None or shutil.which("gpgconf") is None:
        pytest.skip("gpg is not installed (Debian package gnupg)")
    keys: dict[str, GpgKey] = {}
    try:
        for name in ("carol", "mallory", "revoked"):
            keys[name] = make_gpg_key(name)
        yield keys
    finally:
        for key in keys.values():  # signing started a gpg-agent in each home
            subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": key.home}, check=False)
            shutil.rmtree(key.home, ignore_errors=True)


class History:
    """A working repository whose branch ``main`` the source fetches from."""

    def __init__(self, root: Path):
        self.workdir = root / "work"
        run_git(None, "init", "--quiet", "--initial-branch=main", str(self.workdir))
        # A site's cache is a partial clone: the checks must need commits and trees alone.
        run_git(self.workdir, "config", "uploadpack.allowFilter", "true")
        self.source = GitSource(str(self.workdir), "main", root / "cache")

    def commit(self, name: str, signer: Signer | None = None) -> str:
        (self.workdir / f"{name}.txt").write_text(f"{name}\n")
        run_git(self.workdir, "add", "--all")
        self._git_commit(signer, "-m", name)
        return self.head()

    def merge(self, branch: str, signer: Signer | None = None, extra_change: bool = False) -> str:
        """A --no-ff merge, as a forge's merge button makes; ``extra_change`` adds a file the
        merge's parents do not have (an "evil merge")."""
        run_git(self.workdir, "merge", "--quiet", "--no-ff", "--no-commit", branch)
        if extra_change:
            (self.workdir / "slipped-in.txt").write_text("not from either parent\n")
            run_git(self.workdir, "add", "--all")
        self._git_commit(signer, "--no-edit")
        return self.head()

    def switch(self, branch: str, create: bool = False) -> None:
        run_git(self.workdir, "switch", "--quiet", *(["-c"] if create else []), branch)

    def head(self) -> str:
        return run_git(self.workdir, "rev-parse", "HEAD")

    def fetch(self) -> str:
        return self.source.fetch()

    def cached_blobs(self) -> list[str]:
        """The blobs the cache holds, listed without fetching any."""
        listing = run_git(None, "--git-dir", str(self.source.cache_dir), "cat-file", "--batch-all-objects",
                          "--batch-check=%(objectname) %(objecttype)")
        return [line for line in listing.splitlines() if line.endswith(" blob")]

    def _git_commit(self, signer: Signer | None, *args: str) -> None:
        if signer is None:
            run_git(self.workdir, "commit", "--quiet", *args)
        else:
            run_git(self.workdir, *signer.config, "commit", "--quiet", "-S", *args, env=signer.env)


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    made = History(tmp_path)
    with made.source:
        yield made


def allowed_signers(path: Path, *entries: str) -> Path:
    path.write_text("# who may sign the fleet repo\n" + "".join(f"{entry}\n" for entry in entries))
    return path


@pytest.fixture
def ssh_policy(tmp_path: Path, ssh_keys: dict[str, SshKey]) -> CommitPolicy:
    return CommitPolicy(ssh_allowed_signers=allowed_signers(tmp_path / "allowed", f"alice@example.org {ssh_keys['alice'].public}"))


def refusal(history: History, policy: CommitPolicy, applied: str | None, head: str) -> Stalled:
    with pytest.raises(Stalled) as refused:
        verify_commits(history.source, policy, applied, head)
    return refused.value


@needs_ssh
def test_head_signed_by_an_allowed_ssh_key_passes(history: History, ssh_keys: dict[str, SshKey],
                                                  ssh_policy: CommitPolicy) -> None:
    history.commit("first", ssh_keys["alice"].signer)
    head = history.fetch()
    assert verify_commits(history.source, ssh_policy, None, head) == [head]


@needs_ssh
def test_unsigned_head_is_refused_naming_the_commit_and_its_author(history: History,
                                                                   ssh_policy: CommitPolicy) -> None:
    head = history.commit("unsigned")
    history.fetch()
    error = refusal(history, ssh_policy, None, head)
    assert error.reason == "CommitUnsigned"
    assert error.message == f"commit {head[:12]} by {AUTHOR} is not signed"


@needs_ssh
@pytest.mark.parametrize("signer, entry", [
    ("mallory", "alice@example.org {alice}"),
    ("alice", 'alice@example.org valid-before="20200101" {alice}'),  # alice, but not at the commit's date
])
def test_ssh_signer_not_allowed_at_commit_time_is_refused(history: History, ssh_keys: dict[str, SshKey],
                                                          tmp_path: Path, signer: str, entry: str) -> None:
    policy = CommitPolicy(ssh_allowed_signers=allowed_signers(tmp_path / "allowed",
                                                            entry.format(alice=ssh_keys["alice"].public)))
    head = history.commit("signed", ssh_keys[signer].signer)
    history.fetch()
    error = refusal(history, policy, None, head)
    assert error.reason == "CommitSignerNotAllowed"
    assert ssh_keys[signer].fingerprint in error.message and str(tmp_path / "allowed") in error.message


@needs_ssh
def test_tampered_commit_has_an_invalid_signature(history: History, ssh_keys: dict[str, SshKey],
                                                  ssh_policy: CommitPolicy) -> None:
    signed = history.commit("signed", ssh_keys["alice"].signer)
    body = run_git(history.workdir, "cat-file", "commit", signed) + "\n"
    forged_path = history.workdir / "forged"
    forged_path.write_text(body.replace("\nsigned\n", "\nsigned, then altered\n"))
    forged = run_git(history.workdir, "hash-object", "-t", "commit", "-w", str(forged_path))
    run_git(history.workdir, "update-ref", "refs/heads/main", forged)
    history.fetch()
    error = refusal(history, ssh_policy, None, forged)
    assert error.reason == "CommitSignatureInvalid"
    assert forged[:12] in error.message and "bad signature" in error.message


@needs_ssh
@pytest.mark.parametrize("mode, refused", [("head", False), ("first-parent", True), ("all", True)])
def test_an_unsigned_commit_since_the_applied_one(history: History, ssh_keys: dict[str, SshKey],
                                                  tmp_path: Path, mode: str, refused: bool) -> None:
    policy = CommitPolicy(mode=mode, ssh_allowed_signers=allowed_signers(
        tmp_path / "allowed", f"alice@example.org {ssh_keys['alice'].public}"))
    applied = history.commit("applied", ssh_keys["alice"].signer)
    middle = history.commit("pushed-unsigned")
    head = history.commit("head", ssh_keys["alice"].signer)
    history.fetch()
    if refused:
        error = refusal(history, policy, applied, head)
        assert (error.reason, error.message) == ("CommitUnsigned", f"commit {middle[:12]} by {AUTHOR} is not signed")
    else:
        assert verify_commits(history.source, policy, applied, head) == [head]


@needs_ssh
@pytest.mark.parametrize("applied", [None, "f" * 40])  # first reconcile; a commit the cache never had
def test_without_a_known_applied_commit_only_head_is_checked(history: History, ssh_keys: dict[str, SshKey],
                                                             tmp_path: Path, applied: str | None) -> None:
    policy = CommitPolicy(mode="all", ssh_allowed_signers=allowed_signers(
        tmp_path / "allowed", f"alice@example.org {ssh_keys['alice'].public}"))
    history.commit("old-unsigned")
    head = history.commit("head", ssh_keys["alice"].signer)
    history.fetch()
    assert verify_commits(history.source, policy, applied, head) == [head]


def forge_merge(history: History, alice: Signer, branch_signer: Signer | None,
                merge_signer: Signer | None = None, extra_change: bool = False) -> tuple[str, str, str]:
    """applied on main, one commit on a feature branch, then the branch merged into main."""
    applied = history.commit("applied", alice)
    history.switch("feature", create=True)
    feature = history.commit("feature", branch_signer)
    history.switch("main")
    history.commit("meanwhile-on-main", alice)  # so the merge is a real one with two sides
    merge = history.merge("feature", merge_signer, extra_change)
    history.fetch()
    return applied, feature, merge


@needs_ssh
@pytest.mark.parametrize("mode", ["first-parent", "all"])
def test_unsigned_forge_merge_of_signed_commits_passes_when_allowed(history: History, tmp_path: Path,
                                                                    ssh_keys: dict[str, SshKey], mode: str) -> None:
    alice = ssh_keys["alice"].signer
    applied, feature, merge = forge_merge(history, alice, branch_signer=alice)
    allowed = allowed_signers(tmp_path / "allowed", f"alice@example.org {ssh_keys['alice'].public}")
    policy = CommitPolicy(mode=mode, ssh_allowed_signers=allowed, allow_unsigned_merges=True)
    verified = verify_commits(history.source, policy, applied, merge)
    assert feature in verified and verified[-1] == merge and len(verified) == 3
    assert history.cached_blobs() == []  # signatures and the clean-merge check read no file

    strict = CommitPolicy(mode=mode, ssh_allowed_signers=allowed)
    error = refusal(history, strict, applied, merge)
    assert (error.reason, error.message) == ("CommitUnsigned", f"commit {merge[:12]} by {AUTHOR} is not signed")


@needs_ssh
@pytest.mark.parametrize("mode", ["first-parent", "all"])
def test_unsigned_merge_does_not_vouch_for_the_unsigned_commits_it_brings(
        history: History, tmp_path: Path, ssh_keys: dict[str, SshKey], mode: str) -> None:
    applied, feature, merge = forge_merge(history, ssh_keys["alice"].signer, branch_signer=None)
    policy = CommitPolicy(mode=mode, allow_unsigned_merges=True, ssh_allowed_signers=allowed_signers(
        tmp_path / "allowed", f"alice@example.org {ssh_keys['alice'].public}"))
    error = refusal(history, policy, applied, merge)
    assert (error.reason, error.message) == ("CommitUnsigned", f"commit {feature[:12]} by {AUTHOR} is not signed")


@needs_ssh
@pytest.mark.parametrize("mode, refused", [("first-parent", False), ("all", True)])
def test_a_signed_merge_vouches_for_its_second_parent_in_first_parent_mode_only(
        history: History, tmp_path: Path, ssh_keys: dict[str, SshKey], mode: str, refused: bool) -> None:
    alice = ssh_keys["alice"].signer
    applied, feature, merge = forge_merge(history, alice, branch_signer=None, merge_signer=alice)
    policy = CommitPolicy(mode=mode, ssh_allowed_signers=allowed_signers(
        tmp_path / "allowed", f"alice@example.org {ssh_keys['alice'].public}"))
    if refused:
        assert feature[:12] in refusal(history, policy, applied, merge).message
    else:
        assert feature not in verify_commits(history.source, policy, applied, merge)


@needs_ssh
def test_unsigned_merge_with_changes_of_its_own_is_refused(history: History, tmp_path: Path,
                                                           ssh_keys: dict[str, SshKey]) -> None:
    alice = ssh_keys["alice"].signer
    applied, _, merge = forge_merge(history, alice, branch_signer=alice, extra_change=True)
    policy = CommitPolicy(mode="first-parent", allow_unsigned_merges=True, ssh_allowed_signers=allowed_signers(
        tmp_path / "allowed", f"alice@example.org {ssh_keys['alice'].public}"))
    error = refusal(history, policy, applied, merge)
    assert error.reason == "CommitUnsigned"
    assert merge[:12] in error.message and "not the clean merge of its parents" in error.message


@needs_gpg
def test_gpg_signature_by_a_key_in_the_keyring_passes(history: History, tmp_path: Path,
                                                      gpg_keys: dict[str, GpgKey]) -> None:
    keyring = tmp_path / "keyring.asc"
    keyring.write_bytes(gpg_keys["carol"].public)
    history.commit("signed", gpg_keys["carol"].signer)
    head = history.fetch()
    assert verify_commits(history.source, CommitPolicy(gpg_keyring=keyring), None, head) == [head]
    assert not verifier_daemons(), "verifying must not leave a gpg-agent or dirmngr running"


@needs_gpg
def test_gpg_signature_by_a_key_not_in_the_keyring_is_refused(history: History, tmp_path: Path,
                                                              gpg_keys: dict[str, GpgKey]) -> None:
    keyring = tmp_path / "keyring.asc"
    keyring.write_bytes(gpg_keys["carol"].public)
    head = history.commit("signed", gpg_keys["mallory"].signer)
    history.fetch()
    error = refusal(history, CommitPolicy(gpg_keyring=keyring), None, head)
    assert error.reason == "CommitSignerNotAllowed"
    assert gpg_keys["mallory"].fingerprint[-16:] in error.message and str(keyring) in error.message

    keyring.write_bytes(gpg_keys["carol"].public + gpg_keys["mallory"].public)  # the keyring file changes
    assert verify_commits(history.source, CommitPolicy(gpg_keyring=keyring), None, head) == [head]


@needs_gpg
def test_gpg_signature_by_a_revoked_key_is_refused(history: History, tmp_path: Path,
                                                   gpg_keys: dict[str, GpgKey]) -> None:
    keyring = tmp_path / "keyring.asc"
    keyring.write_bytes(revoked_copy(gpg_keys["revoked"]))
    head = history.commit("signed", gpg_keys["revoked"].signer)
    history.fetch()
    error = refusal(history, CommitPolicy(gpg_keyring=keyring), None, head)
    assert error.reason == "CommitSignatureInvalid" and "revoked" in error.message


@needs_ssh
@needs_gpg
def test_each_kind_of_signature_needs_its_own_trust_root(history: History, tmp_path: Path,
                                                         ssh_keys: dict[str, SshKey],
                                                         gpg_keys: dict[str, GpgKey]) -> None:
    keyring = tmp_path / "keyring.asc"
    keyring.write_bytes(gpg_keys["carol"].public)
    ssh_signed = history.commit("ssh-signed", ssh_keys["alice"].signer)
    history.fetch()
    error = refusal(history, CommitPolicy(gpg_keyring=keyring), None, ssh_signed)
    assert error.reason == "CommitSignerNotAllowed" and "it has no sshAllowedSigners" in error.message

    gpg_signed = history.commit("gpg-signed", gpg_keys["carol"].signer)
    history.fetch()
    allowed = allowed_signers(tmp_path / "allowed", f"alice@example.org {ssh_keys['alice'].public}")
    error = refusal(history, CommitPolicy(ssh_allowed_signers=allowed), None, gpg_signed)
    assert error.reason == "CommitSignerNotAllowed" and "it has no gpgKeyring" in error.message
    both = CommitPolicy(mode="all", ssh_allowed_signers=allowed, gpg_keyring=keyring)
    assert verify_commits(history.source, both, ssh_signed, gpg_signed) == [gpg_signed]


@needs_ssh
@needs_gpg
def test_the_machines_own_git_and_gpg_config_do_not_widen_the_signers(
        history: History, tmp_path: Path, ssh_keys: dict[str, SshKey], gpg_keys: dict[str, GpgKey],
        monkeypatch: pytest.MonkeyPatch, ssh_policy: CommitPolicy) -> None:
    ssh_signed = history.commit("ssh-signed-by-mallory", ssh_keys["mallory"].signer)
    gpg_signed = history.commit("gpg-signed-by-mallory", gpg_keys["mallory"].signer)
    history.fetch()
    # The user's git config allows mallory's SSH key and names an ssh-keygen that approves of
    # anything; their GNUPGHOME holds mallory's gpg key with ultimate trust. None of it may count.
    lenient = allowed_signers(tmp_path / "lenient", f"mallory@example.org {ssh_keys['mallory'].public}")
    approver = tmp_path / "approve-everything"
    approver.write_text('#!/bin/sh\necho mallory@example.org\n'
                        'echo \'Good "git" signature for mallory@example.org with ED25519 key SHA256:x\'\n')
    approver.chmod(0o755)
    user_config = tmp_path / "user-gitconfig"
    user_config.write_text(f'[gpg "ssh"]\n\tallowedSignersFile = {lenient}\n\tprogram = {approver}\n')
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(user_config))
    monkeypatch.setenv("GNUPGHOME", gpg_keys["mallory"].home)
    keyring = tmp_path / "keyring.asc"
    keyring.write_bytes(gpg_keys["carol"].public)
    policy = CommitPolicy(ssh_allowed_signers=ssh_policy.ssh_allowed_signers, gpg_keyring=keyring)
    for head in (ssh_signed, gpg_signed):
        assert refusal(history, policy, None, head).reason == "CommitSignerNotAllowed"


@pytest.mark.parametrize("files, problem", [
    ({}, "cannot read allowed signers"),
    ({"allowed": None}, "cannot read allowed signers"),  # a directory
    ({"allowed": "# nobody yet\n\n"}, "names no signer"),
    ({"allowed": "alice@example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n"}, "allowed:1: not an allowed-signers"),
    ({"allowed": 'alice@example.org namespaces="git ssh-ed25519 AAAA\n'}, "allowed:1: not an allowed-signers"),
    ({"allowed": "{alice}\nalice@example.org\n"}, "allowed:2: not an allowed-signers"),
    ({"allowed": "{alice}", "keyring": b""}, "is empty"),
    ({"allowed": "{alice}", "keyring": b"-----BEGIN PGP PUBLIC KEY BLOCK-----\nnot a key\n"}, "gpg keyring"),
    ({"allowed": "{alice}", "keyring": None}, "cannot read gpg keyring"),
])
def test_unusable_policy_files_are_refused(history: History, tmp_path: Path, ssh_keys: dict[str, SshKey],
                                           files: dict[str, str | bytes | None], problem: str) -> None:
    head = history.commit("signed", ssh_keys["alice"].signer)
    history.fetch()
    paths = {name: tmp_path / "policy" / name for name in ("allowed", "keyring")}
    paths["allowed"].parent.mkdir()
    for name, content in files.items():
        if content is None:
            paths[name].mkdir()
        elif isinstance(content, bytes):
            paths[name].write_bytes(content)
        else:
            paths[name].write_text(content.replace("{alice}", f"alice@example.org {ssh_keys['alice'].public}"))
    policy = CommitPolicy(ssh_allowed_signers=paths["allowed"], gpg_keyring=paths["keyring"] if "keyring" in files else None)
    error = refusal(history, policy, None, head)
    assert error.reason == "CommitPolicyInvalid"
    assert problem in error.message


@pytest.mark.parametrize("settings, problem", [
    ({}, "needs sshAllowedSigners, gpgKeyring or both"),
    ({"sshAllowedSigners": "a", "allowUnsignedMerges": True}, "allowUnsignedMerges needs mode first-parent or all"),
    ({"sshAllowedSigners": "a", "mode": "tip"}, "mode"),
    ({"sshAllowedSigners": "a", "verify": True}, "verify"),
])
def test_policy_settings_are_checked(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        CommitPolicy.model_validate(settings)


def verifier_daemons() -> list[str]:
    """Command lines of running processes that use a home this module made."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if "reconciler-gnupg-" in text:
            found.append(text)
    return found
