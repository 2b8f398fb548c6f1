"""The HTTP proxy an artifact download goes through, from the environment as curl and git read it:
``http_proxy`` / ``HTTPS_PROXY`` (lower case first), ``no_proxy`` / ``NO_PROXY`` for the hosts that
bypass it. So one set of variables in the agent's unit file serves the fleet repo (git reads them
itself) and the artifacts alike.

Only ``http://`` proxies: plain http goes to them in absolute form, https through a CONNECT tunnel
(the proxy sees the host, never the path, headers or bytes). Credentials in the proxy URL become
a ``Proxy-Authorization: Basic`` header and are never shown."""

from __future__ import annotations

import base64
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from reconciler import reasons
from reconciler.errors import Stalled


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # Proxy-Authorization, if any
    shown: str = ""  # the proxy URL without its credentials, for messages


def proxy_for(scheme: str, host: str, port: int | None) -> Proxy | None:
    """The proxy for a request to ``scheme://host:port``, or None to connect directly."""
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme)
    if not url:
        return None
    netloc = host if port is None else f"{host}:{port}"
    if urllib.request.proxy_bypass_environment(netloc, proxies):
        return None
    return _parse(url, scheme)


def _parse(url: str, scheme: str) -> Proxy:
    variable = f"{scheme}_proxy"
    parts = urlsplit(url if "://" in url else f"http://{url}")  # curl reads "proxy:3128" as http
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    shown = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    if parts.scheme != "http" or not host:
        raise Stalled(reasons.ArtifactProxyInvalid, f"${variable} is {shown}: only http:// proxies with a host are supported")
    headers = {}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    return Proxy(host, port or 80, headers, shown)
