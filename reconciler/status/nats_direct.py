"""Batched direct gets: the stored messages of a stream after a sequence, on a subject, in as few
round trips as the server allows.

nats-server 2.11 and later answer one direct get request (``$JS.API.DIRECT.GET.<stream>`` with
``{"seq", "next_by_subj", "batch"}``, ADR-31) with up to ``batch`` messages, each carrying
``Nats-Num-Pending``, then an end-of-batch status (``204 EOB``, with ``Nats-Num-Pending`` and
``Nats-Last-Sequence``); ``404`` when nothing matches. nats-py 2.16 asks one message per request
(``JetStreamManager.get_msg``) and its ``request`` keeps only the first reply, so this keeps one
wildcard inbox per connection and routes every reply to the batch it answers. A server that does
not batch answers with one message and no ``Nats-Num-Pending``: the next request then asks from
after it, which is the one-message-per-request walk."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["DirectGets", "DirectGetRefused", "Stored"]

BATCH = 256  # messages per request: every shard of a 25 000-site deployment in one round trip


class DirectGetRefused(Exception):
    """The server answered a direct get with a status other than a batch's end or "none"."""


@dataclass(frozen=True)
class Stored:
    subject: str
    sequence: int
    data: bytes
    headers: dict[str, str]


class DirectGets:
    """The direct gets of one connection (``nc``: a connected nats-py client)."""

    def __init__(self, nc: Any, api_prefix: str, timeout: float):
        self._nc, self._api, self._timeout = nc, api_prefix, timeout
        self._inbox = nc.new_inbox()
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Queue] = {}

    async def start(self) -> None:
        await self._nc.subscribe(self._inbox + ".*", cb=self._deliver)

    async def after(self, stream: str, subject: str, sequence: int) -> tuple[list[Stored], int]:
        """The messages of ``stream`` on ``subject`` (wildcards allowed) stored after ``sequence``,
        oldest first, and the requests that took."""
        found: list[Stored] = []
        requests, more = 0, True
        while more:
            batch, more, sequence = await self._batch(stream, {"seq": sequence + 1, "next_by_subj": subject,
                                                              "batch": BATCH}, sequence)
            found += batch
            requests += 1
        return found, requests

    async def _batch(self, stream: str, request: dict[str, Any], sequence: int) -> tuple[list[Stored], bool, int]:
        """One request's messages, whether more remain, and the newest sequence it covered."""
        token = str(next(self._tokens))
        replies: asyncio.Queue = asyncio.Queue()
        self._waiting[token] = replies
        try:
            await self._nc.publish(f"{self._api}.DIRECT.GET.{stream}", json.dumps(request).encode(),
                                   reply=f"{self._inbox}.{token}")
            batch: list[Stored] = []
            while True:
                reply = await asyncio.wait_for(replies.get(), self._timeout)
                headers = dict(reply.headers or {})
                status = headers.get("Status")
                if status == "404":
                    return batch, False, sequence
                if status == "204":
                    return batch, int(headers.get("Nats-Num-Pending", "0")) > 0, \
                        int(headers.get("Nats-Last-Sequence", sequence))
                if status is not None:
                    raise DirectGetRefused(f"direct get on {stream}: {status} {headers.get('Description', '')}")
                stored = Stored(headers["Nats-Subject"], int(headers["Nats-Sequence"]), reply.data or b"", headers)
                batch.append(stored)
                sequence = stored.sequence
                if "Nats-Num-Pending" not in headers:  # a server that answers one message per request
                    return batch, True, sequence
        finally:
            del self._waiting[token]

    async def _deliver(self, reply: Any) -> None:
        replies = self._waiting.get(reply.subject.rsplit(".", 1)[-1])
        if replies is not None:  # None: a late reply to a batch given up on
            replies.put_nowait(reply)
