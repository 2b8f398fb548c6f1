"""``commitPolicy:`` of site.yaml: which fleet commits must be signed, and by whom
(reconciler.trust.commitpolicy checks them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, model_validator

from reconciler.settings.paths import SETTINGS, LocalPath


class CommitPolicy(BaseModel):
    model_config = SETTINGS

    mode: Literal["head", "first-parent", "all"] = "head"
    ssh_allowed_signers: LocalPath | None = None  # ssh-keygen ALLOWED SIGNERS format
    gpg_keyring: LocalPath | None = None  # OpenPGP public keys, ASCII-armored or binary
    allow_unsigned_merges: bool = False

    @model_validator(mode="after")
    def _names_signers(self) -> CommitPolicy:
        if self.ssh_allowed_signers is None and self.gpg_keyring is None:
            raise ValueError("a commit policy needs sshAllowedSigners, gpgKeyring or both")
        if self.allow_unsigned_merges and self.mode == "head":
            raise ValueError("allowUnsignedMerges needs mode first-parent or all: "
                             "in mode head an unsigned merge would leave nothing verified")
        return self
