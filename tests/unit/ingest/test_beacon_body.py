"""What a head beacon's body may say (ingest/beacon.py commit_named): a commit id, or the forges'
JSON that holds one; anything else names no commit and the poll runs git instead."""

from __future__ import annotations

import json

import pytest

from reconciler.ingest.beacon import commit_named

SHA1, SHA256 = "0123456789abcdef0123456789abcdef01234567", "ab" * 32

NAMED = [
    ("the hook's file", f"{SHA1}\n".encode(), SHA1),
    ("sha-256 repository", SHA256.encode(), SHA256),
    ("upper case", SHA1.upper().encode(), SHA1),
    ("GitHub /commits/<branch>", json.dumps({"sha": SHA1, "commit": {"message": "x"}}).encode(), SHA1),
    ("GitHub /git/ref/heads/<branch>", json.dumps({"ref": "refs/heads/main", "object": {"sha": SHA1, "type": "commit"}}).encode(), SHA1),
    ("Gitea or GitLab /branches/<branch>", json.dumps({"name": "main", "commit": {"id": SHA1}}).encode(), SHA1),
]
REFUSED = [
    ("empty", b""),
    ("short id", SHA1[:39].encode()),
    ("41 hex", (SHA1 + "0").encode()),
    ("two ids", f"{SHA1}\n{SHA1}".encode()),
    ("html error page", b"<html><body>502 Bad Gateway</body></html>"),
    ("JSON without an id", json.dumps({"sha": "main"}).encode()),
    ("JSON list", json.dumps([SHA1]).encode()),
    ("ref line", f"{SHA1}\trefs/heads/main".encode()),
    ("binary", bytes(range(256))),
]


@pytest.mark.parametrize(("case", "body", "commit"), NAMED, ids=[row[0] for row in NAMED])
def test_a_body_naming_a_commit(case, body, commit):
    assert commit_named(body) == commit


@pytest.mark.parametrize(("case", "body"), REFUSED, ids=[row[0] for row in REFUSED])
def test_a_body_naming_no_commit(case, body):
    assert commit_named(body) is None
