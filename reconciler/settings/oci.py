"""``fetch.oci:`` of site.yaml: how a site reads ``oci://`` artifacts from container registries."""

from __future__ import annotations

from pydantic import BaseModel, field_validator

from reconciler.settings.paths import SETTINGS, LocalPath


class OciSettings(BaseModel):
    """``docker_config``: a docker ``config.json`` giving credentials per registry (after
    ``fetch.auth``, which wins): its ``credHelpers`` (a ``docker-credential-<name>`` program per
    registry), its ``credsStore`` (one for all), its ``auths`` (basic pairs, identity tokens). ``plain_http``: registries (``host[:port]``) spoken to over
    http, as docker's "insecure registries" (a mirror on the site's own network); every other one over
    https. ``mirrors``: registries tried, in order, before the one a URI names; a digest-pinned
    artifact is the same bytes wherever it comes from, and is verified as such."""

    model_config = SETTINGS

    docker_config: LocalPath | None = None
    plain_http: list[str] = []
    mirrors: dict[str, list[str]] = {}

    @field_validator("plain_http")
    @classmethod
    def _lowercase(cls, registries: list[str]) -> list[str]:
        return [registry.lower() for registry in registries]

    @field_validator("mirrors")
    @classmethod
    def _lowercase_keys(cls, mirrors: dict[str, list[str]]) -> dict[str, list[str]]:
        return {registry.lower(): [m.lower() for m in hosts] for registry, hosts in mirrors.items()}
