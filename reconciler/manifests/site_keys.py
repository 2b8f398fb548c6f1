"""The keys a Site document enrolls for signing its status records (``spec.statusKeys``). They
come from ``reconciler enroll`` on the site, which keeps the private half; adding, retiring and
removing one is a pull request, and merging it is the approval."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from reconciler.manifests.types import require_unique

PEM_PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----"


class StatusKey(BaseModel):
    """A public key whose signatures on the site's status records the fleet accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")] = Field(
        description="Names the key among the site's keys, e.g. the date it was made; `reconciler enroll` "
                    "writes the first 16 hex digits of its SHA-256 fingerprint.")
    publicKey: str = Field(description="The PEM 'PUBLIC KEY' (ECDSA P-256) that `reconciler enroll` printed; "
                                       "the private key never leaves the site.")
    retiring: bool = Field(False, description="Still accepted, but being replaced (`reconciler enroll --rotate`): "
                                              "remove it once the site signs with its new key.")

    @field_validator("publicKey")
    @classmethod
    def _pem(cls, text: str) -> str:
        if PEM_PUBLIC_KEY not in text:
            raise ValueError(f"a PEM public key starts with {PEM_PUBLIC_KEY!r}")
        return text


def _unique_ids(keys: list[StatusKey]) -> list[StatusKey]:
    ids = [key.id for key in keys]
    require_unique(ids, "status key ids")
    return keys


StatusKeys = Annotated[list[StatusKey], AfterValidator(_unique_ids)]
