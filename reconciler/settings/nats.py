"""``nats:`` of site.yaml: the optional NATS JetStream channel (reconciler.status.nats_channel) that
carries status records and fleet-commit notifications instead of status refs in Git."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

from reconciler.manifests.types import Duration
from reconciler.settings.paths import SETTINGS, LocalPath

_BUCKET = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_SCHEMES = ("nats", "tls")


class NatsSettings(BaseModel):
    """Where the records bucket and the fleet bucket live, and how this site proves who it is: at most
    one of a credentials file (JWT + NKey seed, what ``nsc`` issues), a token (by the NAME of its
    environment variable) or an NKey seed file."""

    model_config = SETTINGS

    servers: Annotated[list[str], Field(min_length=1)]  # nats://host:4222 or tls://host:4222, tried in turn
    records_bucket: str = "reconciler-status"  # KV: one key per site, its newest record
    fleet_bucket: str = "reconciler-fleet"  # KV: key ``commit``, the fleet's newest commit (reconciler notify)
    # KV: key ``<deployment>.<shard>``, the shard's summary (delivery/summary.py), what gates read
    summaries_bucket: str = "reconciler-summaries"
    domain: str | None = None  # the JetStream domain of the buckets: needed through a leaf node (README)
    history: Annotated[int, Field(ge=1, le=64)] = 10  # revisions kept per key (JetStream's limit is 64)
    credentials_file: LocalPath | None = None
    token_env: str | None = None
    nkey_seed: LocalPath | None = None
    tls_ca: LocalPath | None = None  # PEM bundle that signs the server's certificate; None: the system's
    timeout: Annotated[float, Field(gt=0)] = 5  # one request (connect, put, bucket lookup), in seconds
    audit: Literal["git", "off"] = "git"  # git: state changes also go to the site's status ref (statusRepo or repo)
    # audit commits wait in the site's cache and go in one push after a random share of this (and
    # at shutdown), so a wave that moves together does not push together (README "NATS channel")
    audit_spread: Duration = timedelta(minutes=10)

    @field_validator("servers")
    @classmethod
    def _servers(cls, servers: list[str]) -> list[str]:
        for server in servers:
            parts = urlsplit(server)
            if parts.scheme not in _SCHEMES or not parts.hostname:
                raise ValueError(f"{server!r}: a server is nats://HOST:PORT or tls://HOST:PORT")
            if parts.username is not None or parts.password is not None:
                raise ValueError("a server URL must not carry credentials: use credentialsFile, tokenEnv or nkeySeed")
        return servers

    @field_validator("records_bucket", "fleet_bucket", "summaries_bucket", "domain")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        if name is not None and not _BUCKET.fullmatch(name):
            raise ValueError("a bucket or domain name is letters, digits, - and _")
        return name

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str | None) -> str | None:
        # The message never repeats the value: a token pasted here by mistake must not reach a log.
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError("tokenEnv must be the name of an environment variable (A-Z, 0-9, _), not the token")
        return value

    @model_validator(mode="after")
    def _one_identity(self) -> NatsSettings:
        given = [name for name, value in (("credentialsFile", self.credentials_file), ("tokenEnv", self.token_env),
                                          ("nkeySeed", self.nkey_seed)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"give one of credentialsFile, tokenEnv and nkeySeed, not {' and '.join(given)}")
        return self
