"""``fetch:`` of site.yaml: how a site fetches artifacts (durations like "30s" there, seconds here)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator

from reconciler.manifests.types import parse_duration
from reconciler.settings.oci import OciSettings
from reconciler.settings.paths import SETTINGS, LocalPath


def _seconds(value: object) -> float:
    return parse_duration(value).total_seconds()


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]


class AuthConfig(BaseModel):
    """Credentials for one host, named by environment variable so that no secret sits in a config
    file, a repr or a log: a bearer token (``tokenEnv``) or HTTP basic (``username`` + ``passwordEnv``).
    They go over https only, unless ``allowHttp`` says this host may have them in clear text (a
    mirror on the site's own network), as container registries ask for an "insecure" opt-in.
    reconciler.ingest.fetch.authorization reads them."""

    model_config = SETTINGS

    token_env: str | None = None
    username: str | None = None
    password_env: str | None = None
    allow_http: bool = False

    @model_validator(mode="after")
    def _one_scheme(self) -> AuthConfig:
        basic = (self.username, self.password_env)
        if self.token_env is not None and basic == (None, None):
            return self
        if self.token_env is None and None not in basic:
            return self
        raise ValueError("give either tokenEnv (bearer token) or both username and passwordEnv (basic)")


class FetchLimits(BaseModel):
    """Stalls: no byte at all for ``read_timeout``, or fewer than ``min_rate`` bytes/s on average over
    ``stall_timeout`` (a server that trickles). ``deadline`` bounds one whole ingest, attempts and
    pauses included. ``retries`` counts attempts in total; before attempt n+1 the agent sleeps a
    random time in [0, backoff * 2**(n-1)] (exponential backoff, full jitter). ``auth`` maps host
    names to credentials, sent to that host only. ``ca_bundle`` replaces the system's CAs for https.
    ``oci``: registries (``oci://`` artifacts)."""

    model_config = SETTINGS

    max_bytes: Annotated[int, Field(gt=0)] = 2 << 30
    connect_timeout: Seconds = 10.0
    read_timeout: Seconds = 30.0
    stall_timeout: Seconds = 60.0
    min_rate: Annotated[int, Field(ge=0)] = 1024
    deadline: Seconds = 3600.0
    retries: Annotated[int, Field(ge=1)] = 3
    backoff: Seconds = 0.5
    redirects: Literal["none", "same-host", "any"] = "same-host"
    auth: dict[str, AuthConfig] = {}
    ca_bundle: LocalPath | None = None
    oci: OciSettings = OciSettings()

    @field_validator("auth")
    @classmethod
    def _hosts_lowercase(cls, auth: dict[str, AuthConfig]) -> dict[str, AuthConfig]:
        return {host.lower(): credentials for host, credentials in auth.items()}
