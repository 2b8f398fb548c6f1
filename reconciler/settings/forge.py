"""``forge:`` of site.yaml: the forge that mirrors status records as commit statuses
(reconciler.status.forge builds them, reconciler.status.forge_client posts and reads them)."""

from __future__ import annotations

import re
import string
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

from reconciler.settings.paths import SETTINGS

ForgeKind = Literal["github", "gitea", "forgejo", "gitlab"]

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_GITLAB_PROJECT = re.compile(r"[0-9]+|[^/\s]+(/[^/\s]+)+")
_OWNER_REPO = re.compile(r"[^/\s]+/[^/\s]+")


class ForgeConfig(BaseModel):
    """The ``forge:`` section of a site config."""

    model_config = SETTINGS

    kind: ForgeKind
    api_url: str  # https://api.github.com, https://gitea.example/api/v1, https://gitlab.example/api/v4
    repository: str  # owner/repo; GitLab: project id or path (group/project, plain or URL-encoded)
    token_env: str  # the NAME of the environment variable that holds the token
    target_url: str | None = None  # link template; may use {site} and {deployment}
    timeout: Annotated[float, Field(gt=0)] = 10
    allow_http: bool = False  # the token may cross a plain http link (a forge on the site's own network)

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("apiUrl must be an http(s) URL such as https://api.github.com")
        if parts.username is not None or parts.password is not None:
            raise ValueError("apiUrl must not carry credentials: name the token's variable in tokenEnv")
        if parts.query or parts.fragment:
            raise ValueError("apiUrl must not have a query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _token_over_https(self) -> ForgeConfig:
        if urlsplit(self.api_url).scheme == "http" and not self.allow_http:
            raise ValueError("apiUrl is http://, so the token would cross the network in clear text: "
                             "use https, or set allowHttp: true for a forge on the site's own network")
        return self

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str) -> str:
        # The message never repeats the value: a token pasted here by mistake must not reach a log.
        if not _ENV_NAME.fullmatch(value):
            raise ValueError("tokenEnv must be the name of an environment variable (A-Z, 0-9, _), not the token")
        return value

    @field_validator("target_url")
    @classmethod
    def _target_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("targetUrl must be an http(s) URL template")
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"targetUrl is not a valid template: {exc}") from None
        if unknown := fields - {"site", "deployment"}:
            raise ValueError(f"targetUrl may use {{site}} and {{deployment}}, not {', '.join(sorted(unknown))}")
        return value

    @model_validator(mode="after")
    def _repository(self) -> ForgeConfig:
        if self.kind == "gitlab":
            if not _GITLAB_PROJECT.fullmatch(unquote(self.repository)):
                raise ValueError("repository must be a GitLab project id or path such as group/project")
        elif not _OWNER_REPO.fullmatch(self.repository):
            raise ValueError(f"repository must be owner/repo for {self.kind}")
        return self
