"""Who a site is to a registry: credentials (site.yaml's ``fetch.auth``, else docker's
``config.json``), the ``WWW-Authenticate`` challenge a registry answers 401 with, and the bearer
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
from reconciler.settings import FetchLimits

TOKEN_MIN_SECONDS = 60  # the token spec's default and floor for expires_in
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


def basic_credentials(registry: str, limits: FetchLimits, scheme: str) -> str | None:
    """``Basic …`` (or a configured ``Bearer …`` token) for ``registry``, or None: anonymous."""
    host = registry.lower()
    configured = limits.auth.get(host) or limits.auth.get(host.split(":")[0])
    if configured is not None:
        return authorization(configured, scheme, host)
    if limits.oci.docker_config is None:
        return None
    pair = _docker_config_pair(limits.oci.docker_config, host)
    if pair is None:
        return None
    if scheme != "https" and host not in limits.oci.plain_http:
        raise Stalled(reasons.ArtifactAuthInsecure, f"{registry}: credentials from {limits.oci.docker_config} go over https only")
    return f"Basic {pair}"


def _docker_config_pair(path: Path, host: str) -> str | None:
    try:
        auths = json.loads(path.read_text()).get("auths") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise Stalled(reasons.ArtifactAuthInvalid, f"fetch.oci.dockerConfig {path}: cannot be read as docker's config.json: {exc}") from None
    for name, entry in auths.items():
        if _registry_of(name) == host and isinstance(entry, dict):
            if entry.get("auth"):
                return str(entry["auth"])
            if entry.get("username") and entry.get("password"):
                return base64.b64encode(f"{entry['username']}:{entry['password']}".encode()).decode("ascii")
    return None


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
