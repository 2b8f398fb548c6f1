"""``headBeacon:`` of site.yaml: a small HTTP(S) document naming the fleet branch's commit, which
the agent polls with a conditional GET instead of running ``git ls-remote`` every interval
(reconciler.agent.headpoll decides, reconciler.ingest.beacon asks). A hint only: what the agent
fetches is still what Git says, and a ``git ls-remote`` every ``backstop`` keeps a beacon that
lies or stops moving from freezing the site."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator

from reconciler.manifests.types import Duration
from reconciler.settings.paths import SETTINGS

__all__ = ["HeadBeacon"]


class HeadBeacon(BaseModel):
    """``url``: the beacon (e.g. ``https://git.example/fleet.git.head`` written by the shipped
    post-receive hook, or a forge's ref API); ``backstop``: at most this long between two
    ``git ls-remote`` polls, whatever the beacon says."""

    model_config = ConfigDict(**SETTINGS, validate_default=True)

    url: str
    backstop: Duration = "10m"

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://git.example/fleet.git.head")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials in the URL are refused; give them in fetch.auth for its host")
        return value
