"""Who a site is to a registry: credentials (site.yaml's ``fetch.auth``, else docker's
``config.json``: its credential helpers, ``ocicredhelper.py``, or its ``auths``), the ``WWW-Authenticate`` challenge a registry answers 401 with, and the bearer
tokens its token service hands out, one per (registry, scope, user), kept until they expire.

Anonymous first: a public registry's token service gives pull tokens without credentials."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from reconciler import reasons
from reconciler.errors import Stalled
from reconciler.ingest.fetch import authorization
from reconciler.ingest.ocicredhelper import helper_credentials
from reconciler.settings import FetchLimits

__all__ = ["Challenge", "Credentials", "cached_token", "forget_token", "keep_token", "parse_challenge",
           "registry_credentials"]

TOKEN_MIN_SECONDS = 60  # the token spec's default and floor for expires_in
DOCKER_HUB_INDEX = "https://index.docker.io/v1/"
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_PARAM = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')

_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
_tokens_lock = threading.Lock()


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic"
    params: dict[str, str]


def parse_challenge(uri: str, header: str | None) -> Challenge:
    scheme, _, rest = (header or "").strip().partition(" ")
    if scheme.lower() not in ("bearer", "basic"):
        raise Stalled(reasons.OciAuthUnsupported, f"{uri}: the registry asks for {header!r}, not Bearer or Basic auth")
    params = {m[1].lower(): m[2] if m[2] else m[3] for m in _PARAM.finditer(rest)}
    if scheme.lower() == "bearer" and not params.get("realm", "").startswith(("https://", "http://")):
        raise Stalled(reasons.OciAuthUnsupported, f"{uri}: the registry's Bearer challenge has no http(s) realm")
    return Challenge(scheme.lower(), params)


@dataclass(frozen=True)
class Credentials:
    """Who a site is to one registry: an ``Authorization`` value (Basic, or a configured Bearer
    token), docker's identity token (an OAuth2 refresh token the token service trades for access
    tokens), or neither: anonymous."""

    header: str | None = None
    identity_token: str | None = None

    @property
    def who(self) -> str | None:
        """What tokens are kept under, so another user's token is never reused."""
        return self.header or self.identity_token


def registry_credentials(registry: str, limits: FetchLimits, scheme: str) -> Credentials:
    """The site's credentials for ``registry``: ``fetch.auth`` first, then docker's config.json
    (its credential helper for the registry, its credentials store, its ``auths``)."""
    host = registry.lower()
    configured = limits.auth.get(host) or limits.auth.get(host.split(":")[0])
    if configured is not None:
        return Credentials(header=authorization(configured, scheme, host))
    if limits.oci.docker_config is None:
        return Credentials()
    found = _docker_config_credentials(limits.oci.docker_config, host)
    if found is None:
        return Credentials()
    if scheme != "https" and host not in limits.oci.plain_http:
        raise Stalled(reasons.ArtifactAuthInsecure, f"{registry}: credentials from {limits.oci.docker_config} go over https only")
    return found


def _docker_config_credentials(path: Path, host: str) -> Credentials | None:
    config = _docker_config(path)
    helpers = config.get("credHelpers") or {}
    helper = next((name for key, name in helpers.items() if _registry_of(key) == host), None) if isinstance(helpers, dict) else None
    helper = helper or config.get("credsStore")
    if isinstance(helper, str) and helper:
        answer = helper_credentials(helper, _server_url(host), f"fetch.oci.dockerConfig {path}")
        if answer is not None:
            if answer.identity_token:
                return Credentials(identity_token=answer.secret)
            return Credentials(header=_basic(answer.username, answer.secret))
    auths = config.get("auths") or {}
    for name, entry in auths.items() if isinstance(auths, dict) else ():
        if _registry_of(name) == host and isinstance(entry, dict):
            if entry.get("identitytoken"):
                return Credentials(identity_token=str(entry["identitytoken"]))
            if entry.get("auth"):
                return Credentials(header=f"Basic {entry['auth']}")
            if entry.get("username") and entry.get("password"):
                return Credentials(header=_basic(entry["username"], entry["password"]))
    return None


def _docker_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Stalled(reasons.ArtifactAuthInvalid, f"fetch.oci.dockerConfig {path}: cannot be read as docker's config.json: {exc}") from None
    if not isinstance(config, dict):
        raise Stalled(reasons.ArtifactAuthInvalid, f"fetch.oci.dockerConfig {path}: not a JSON object")
    return config


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _server_url(host: str) -> str:
    """What docker hands a helper: the registry's host, Docker Hub's being its old index URL."""
    return DOCKER_HUB_INDEX if host in DOCKER_HUB_HOSTS else host


def _registry_of(config_key: str) -> str:
    """docker's keys may be URLs (``https://index.docker.io/v1/``) or ``host[:port]``."""
    key = config_key.lower().removeprefix("https://").removeprefix("http://")
    return key.split("/", 1)[0]


def cached_token(registry: str, scope: str, who: str | None) -> str | None:
    with _tokens_lock:
        found = _tokens.get((registry, scope, who or ""))
    if found is None or found[1] <= time.monotonic():
        return None
    return found[0]


def keep_token(registry: str, scope: str, who: str | None, answer: bytes, uri: str) -> str:
    """The token out of the token service's JSON answer, kept for its lifetime (less a margin)."""
    try:
        document = json.loads(answer)
        token = document.get("token") or document.get("access_token")
        lifetime = max(int(document.get("expires_in") or TOKEN_MIN_SECONDS), TOKEN_MIN_SECONDS)
    except (ValueError, AttributeError, TypeError):
        token = None
    if not isinstance(token, str) or not token or any(ord(c) < 0x21 for c in token):
        raise Stalled(reasons.OciAuthRejected, f"{uri}: the registry's token service answered without a usable token")
    with _tokens_lock:
        _tokens[(registry, scope, who or "")] = (token, time.monotonic() + lifetime * 0.9)
    return token


def forget_token(registry: str, scope: str, who: str | None) -> None:
    with _tokens_lock:
        _tokens.pop((registry, scope, who or ""), None)
