"""Signed status records, table-driven: canonical encoding, signing, and which records count
against which Site documents (enrolled, retiring, removed keys; unsigned mode; requireSignedStatus)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import yaml

from reconciler import trust
from reconciler.manifests.loader import RepoFile, load_tree
from reconciler.status.gitref import record_json
from reconciler.status.record import DeploymentStatus, StatusRecord
from reconciler.status.signed import RecordCheck, RecordSigner, StatusKeyring, canonical_json, record_digest

NOW = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
KEY_A, KEY_B, KEY_C = (trust.generate_private_key() for _ in range(3))  # A active, B retiring, C nobody's


def stored_record(site: str = "store-1", state: str = "success") -> bytes:
    status = DeploymentStatus(model="m", state=state, version="1.1.0", activeVersion="1.1.0", reason="Converged",
                              since=NOW, wave="pilot", rollout="r1")
    record = StatusRecord(site=site, state=state, reason="Converged", deployments={"forecast": status},
                          agentVersion="0", writtenAt=NOW)
    return record_json(record)


def site_doc(name: str, keys: list[tuple[str, object, bool]]) -> dict:
    status_keys = [{"id": key_id, "publicKey": trust.public_key_pem(key).decode(), **({"retiring": True} if retiring else {})}
                   for key_id, key, retiring in keys]
    return {"apiVersion": "reconciler/v1", "kind": "Site", "metadata": {"name": name},
            "spec": {"statusKeys": status_keys} if status_keys else {}}


def fleet(require_signed: bool, *sites: dict):
    documents = [*sites, {"apiVersion": "reconciler/v1", "kind": "Fleet", "metadata": {"name": "f"},
                          "spec": {"requireSignedStatus": require_signed}}]
    text = yaml.safe_dump_all(documents)
    loaded = load_tree([RepoFile("fleet.yaml", "1", lambda: text.encode())])
    assert not loaded.errors, loaded.errors
    return loaded.repo


ENROLLED = site_doc("store-1", [("a", KEY_A, False), ("b", KEY_B, True)])  # mid-rotation
AFTER_REVOCATION = site_doc("store-1", [("a", KEY_A, False)])  # B removed by a pull request
NOT_ENROLLED = site_doc("store-1", [])


def tampered(data: bytes) -> bytes:
    value = json.loads(data)
    value["deployments"]["forecast"]["state"] = "failure"
    return record_json(StatusRecord.model_validate(value))


CASES = [
    # (what, Site document, requireSignedStatus, signing keys or None (unsigned), tamper, counts, why contains)
    ("good signature", ENROLLED, False, [KEY_A], False, True, None),
    ("tampered field", ENROLLED, False, [KEY_A], True, False, "forged/unknown key"),
    ("wrong key", ENROLLED, False, [KEY_C], False, False, "forged/unknown key"),
    ("retiring key still valid", ENROLLED, False, [KEY_B], False, True, None),
    ("removed key refused", AFTER_REVOCATION, False, [KEY_B], False, False, "revoked"),
    ("old and new key during a rotation", AFTER_REVOCATION, False, [KEY_B, KEY_A], False, True, None),
    ("unsigned from an enrolled site", ENROLLED, False, None, False, False, "unsigned"),
    ("unsigned mode", NOT_ENROLLED, False, None, False, True, None),
    ("unsigned under requireSignedStatus", NOT_ENROLLED, True, None, False, False, "requires signed status"),
    ("signed, not enrolled, unsigned mode", NOT_ENROLLED, False, [KEY_C], False, True, None),
    ("signed, not enrolled, requireSignedStatus", NOT_ENROLLED, True, [KEY_C], False, False, "enrolls no key"),
    ("good signature under requireSignedStatus", ENROLLED, True, [KEY_A], False, True, None),
]


@pytest.mark.parametrize(("document", "require", "signers", "tamper", "counts", "why"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_which_records_count(document, require, signers, tamper, counts, why):
    data = stored_record()
    signature = RecordSigner(tuple(signers)).sign(data) if signers else None
    if tamper:
        data = tampered(data)
    check = RecordCheck(StatusKeyring.of_fleet(fleet(require, document)))
    assert check.admit("store-1", "c0ffee" * 6, data, signature) is counts
    if counts:
        assert check.ignored == []
    else:
        [ignored] = check.ignored
        assert (ignored.site, ignored.commit) == ("store-1", "c0ffee" * 6)
        assert why in ignored.why and "store-1" in str(ignored)


def test_a_record_signed_for_one_site_does_not_count_for_another():
    """Another site's genuine record copied onto this site's ref: signed, but not by this site."""
    other = site_doc("store-2", [("c", KEY_C, False)])
    data = stored_record("store-1")
    keyring = StatusKeyring.of_fleet(fleet(False, ENROLLED, other))
    assert keyring.refusal("store-1", data, RecordSigner((KEY_C,)).sign(data)) is not None


@pytest.mark.parametrize("signature", [b"", b"not base64!\n", b"aGVsbG8=\n"], ids=["empty", "not base64", "not DER"])
def test_unreadable_signatures_are_refused(signature):
    check = RecordCheck(StatusKeyring.of_fleet(fleet(False, ENROLLED)))
    assert not check.admit("store-1", "c1", stored_record(), signature)
    assert check.ignored


def test_the_same_ignored_record_is_reported_once():
    check = RecordCheck(StatusKeyring.of_fleet(fleet(False, ENROLLED)))
    for _ in range(2):
        assert not check.admit("store-1", "c1", stored_record(), None)
    assert len(check.ignored) == 1


def test_an_unusable_enrolled_key_verifies_nothing():
    bad_pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    document = {"apiVersion": "reconciler/v1", "kind": "Site", "metadata": {"name": "store-1"},
                "spec": {"statusKeys": [{"id": "bad", "publicKey": bad_pem}]}}
    data = stored_record()
    keyring = StatusKeyring.of_fleet(fleet(False, document))
    assert keyring.refusal("store-1", data, RecordSigner((KEY_A,)).sign(data)) is not None
    assert keyring.refusal("store-1", data, None) is not None


@pytest.mark.parametrize(("one", "other"), [
    (b'{"b": 1, "a": [1.5, "x"]}', b'{\n  "a": [1.5, "x"],\n  "b": 1\n}\n'),
    ('{"m": "Zürich"}'.encode(), b'{"m": "Z\\u00fcrich"}'),
])
def test_canonical_json_ignores_layout_and_key_order(one, other):
    assert record_digest(one) == record_digest(other)
    assert canonical_json(json.loads(one)) == canonical_json(json.loads(other))


def test_canonical_json_is_compact_sorted_utf8():
    assert canonical_json({"b": 1, "a": "ü"}) == '{"a":"ü","b":1}'.encode()


def test_a_signer_accepts_only_its_own_earlier_records_signed_by_each_of_its_keys():
    signer = RecordSigner((KEY_A, KEY_B))
    data = stored_record()
    own = RecordCheck(signer.own_keys("store-1"))
    assert own.admit("store-1", "c1", data, signer.sign(data))
    assert not own.admit("store-1", "c2", data, RecordSigner((KEY_C,)).sign(data))
    assert not own.admit("store-1", "c3", data, None)
    assert not own.admit("store-1", "c4", data, RecordSigner((KEY_A,)).sign(data))  # before the rotation


def test_status_keys_must_have_unique_ids_and_pem_keys():
    from pydantic import ValidationError

    from reconciler.manifests.models import Site

    twice = site_doc("store-1", [("a", KEY_A, False), ("a", KEY_B, False)])
    with pytest.raises(ValidationError, match="unique"):
        Site.model_validate(twice)
    not_pem = {**NOT_ENROLLED, "spec": {"statusKeys": [{"id": "a", "publicKey": "ssh-ed25519 AAAA"}]}}
    with pytest.raises(ValidationError, match="PEM"):
        Site.model_validate(not_pem)


def test_an_agent_checks_each_status_commit_once_and_warns_about_it_once(caplog):
    """A status commit's id covers its record and signature: the verdict is kept across reads,
    for the keys it was reached with; the warning is given once."""
    from reconciler.status.signed import Verdicts

    earlier = Verdicts()
    keyring = StatusKeyring.of_fleet(fleet(False, ENROLLED))
    data = stored_record()
    assert RecordCheck(keyring, earlier=earlier).admit("store-1", "c1", data, RecordSigner((KEY_A,)).sign(data))
    assert RecordCheck(keyring, earlier=earlier).admit("store-1", "c1", data, None)  # remembered: not checked again
    revoked = StatusKeyring.of_fleet(fleet(False, site_doc("store-1", [("b", KEY_B, False)])))
    assert not RecordCheck(revoked, earlier=earlier).admit("store-1", "c1", data, RecordSigner((KEY_A,)).sign(data))
    for _ in range(3):
        later = RecordCheck(keyring, earlier=earlier)
        assert not later.admit("store-1", "c2", data, None)
        assert len(later.ignored) == 1
    assert len([r for r in caplog.records if "ignored status record c2 " in r.getMessage()]) == 1
