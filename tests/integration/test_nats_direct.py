"""Batched direct gets (status/nats_direct.py) against a real nats-server: every message after a
sequence comes, oldest first, in as few requests as the batch size allows; a refusal is an error,
not an empty answer; a server that answers one message per request is walked to the end."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from nats.js.api import KeyValueConfig

from reconciler.devtools.natsserver import NatsServer
from reconciler.status.nats_direct import BATCH, DirectGetRefused, DirectGets

STREAM, KEYS = "KV_shards", "$KV.shards."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with NatsServer(tmp_path_factory.mktemp("nats")) as running:
        yield running


def run(server, work):
    async def connected():
        nc = await nats.connect(server.url)
        try:
            direct = DirectGets(nc, "$JS.API", timeout=5)
            await direct.start()
            return await work(nc, direct)
        finally:
            await nc.close()
    return asyncio.run(connected())


async def bucket(nc, name: str = "shards"):
    return await nc.jetstream().create_key_value(KeyValueConfig(bucket=name, history=1, direct=True))


def test_every_message_after_a_sequence_comes_oldest_first_in_batches(server):
    async def work(nc, direct):
        kv = await bucket(nc)
        for n in range(BATCH * 2 + 10):
            await kv.put(f"d1.{n:04d}", str(n).encode())
        await kv.put("d2.0000", b"another deployment's")
        rewritten = await kv.put("d1.0003", b"again")  # history 1: its first revision is gone
        everything = await direct.after(STREAM, KEYS + "d1.*", 0)
        later = await direct.after(STREAM, KEYS + "d1.*", rewritten - 1)
        nothing = await direct.after(STREAM, KEYS + "d1.*", rewritten)
        return everything, later, nothing, rewritten

    (found, requests), later, nothing, rewritten = run(server, work)
    assert requests == 3  # 522 messages, 256 to a request
    assert [m.subject for m in found][-1] == KEYS + "d1.0003"
    assert len(found) == BATCH * 2 + 10 and len({m.subject for m in found}) == len(found)
    assert [m.sequence for m in found] == sorted(m.sequence for m in found)
    assert found[-1].data == b"again" and found[0].data == b"0"
    assert [(m.subject, m.sequence) for m in later[0]] == [(KEYS + "d1.0003", rewritten)] and later[1] == 1
    assert nothing == ([], 1)


def test_a_stream_that_is_not_there_is_refused_not_taken_for_empty(server):
    async def work(nc, direct):
        return await direct.after("KV_missing", "$KV.missing.>", 0)

    with pytest.raises(DirectGetRefused, match="503"):
        run(server, work)


def test_a_server_answering_one_message_per_request_is_walked_to_the_end(server):
    """nats-server before 2.11 ignores ``batch``: one message per request, no Nats-Num-Pending.
    Such a server cannot run here, so a responder on the real server answers as it would."""
    stored = {5: "$KV.old.d.0000", 9: "$KV.old.d.0001", 12: "$KV.old.d.0002"}

    async def work(nc, direct):
        asked = []

        async def answer(msg):
            request = json.loads(msg.data)
            asked.append(request["seq"])
            after = [seq for seq in sorted(stored) if seq >= request["seq"]]
            if not after:
                await nc.publish(msg.reply, b"", headers={"Status": "404", "Description": "Message Not Found"})
                return
            await nc.publish(msg.reply, b"value", headers={"Nats-Stream": "KV_old", "Nats-Subject": stored[after[0]],
                                                          "Nats-Sequence": str(after[0])})

        await nc.subscribe("$JS.API.DIRECT.GET.KV_old", cb=answer)
        return await direct.after("KV_old", "$KV.old.d.*", 0), asked

    (found, requests), asked = run(server, work)
    assert [m.sequence for m in found] == [5, 9, 12]
    assert asked == [1, 6, 10, 13] and requests == 4
