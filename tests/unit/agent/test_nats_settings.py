"""``nats:`` in site.yaml: camelCase keys, paths against the file's folder, every mistake refused at
its line; a forge beside NATS is refused (nothing would mirror to it)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.agent.config import load_site_config
from reconciler.errors import UsageError

GOOD = "site: store-1\nrepo: https://git.example/fleet.git\nstate: state\n"


def load(tmp_path: Path, text: str):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return load_site_config(path, {})


def test_the_nats_section_reads_camel_case_keys_and_resolves_paths_against_the_file(tmp_path):
    config = load(tmp_path, GOOD + "nats:\n  servers: [tls://nats.example:4222]\n  recordsBucket: fleet-a\n"
                                   "  credentialsFile: creds/site.creds\n  tlsCa: ca.pem\n  history: 20\n  audit: 'off'\n")
    nats = config.nats
    assert (nats.servers, nats.records_bucket, nats.fleet_bucket, nats.history, nats.audit) == \
        (["tls://nats.example:4222"], "fleet-a", "reconciler-fleet", 20, "off")
    assert (nats.credentials_file, nats.tls_ca) == (tmp_path / "creds/site.creds", tmp_path / "ca.pem")
    assert (nats.summaries_bucket, nats.audit_spread) == ("reconciler-summaries", timedelta(minutes=10))  # defaults


def test_the_summaries_bucket_and_audit_spread_are_read(tmp_path):
    nats = load(tmp_path, GOOD + "nats:\n  servers: [nats://h:1]\n  summariesBucket: sums\n  auditSpread: 90s\n").nats
    assert (nats.summaries_bucket, nats.audit_spread) == ("sums", timedelta(seconds=90))


@pytest.mark.parametrize(("section", "said"), [
    ("  servers: [http://h:4222]\n", "servers: 'http://h:4222': a server is nats://HOST:PORT or tls://HOST:PORT"),
    ("  servers: ['nats://u:pw@h:4222']\n", "servers: a server URL must not carry credentials"),
    ("  servers: []\n", "site.yaml:5:12: error: nats.servers: List should have at least 1 item"),
    ("  servers: [nats://h:1]\n  recordsBucket: a.b\n", "recordsBucket: a bucket or domain name is letters, digits, - and _"),
    ("  servers: [nats://h:1]\n  tokenEnv: abc-def\n", "tokenEnv: tokenEnv must be the name of an environment variable"),
    ("  servers: [nats://h:1]\n  tokenEnv: T\n  nkeySeed: s.nk\n", "give one of credentialsFile, tokenEnv and nkeySeed"),
    ("  servers: [nats://h:1]\n  history: 65\n", "history: should be less than or equal to 64"),
    ("  servers: [nats://h:1]\n  audit: always\n", "audit: should be 'git' or 'off'"),
    ("  servers: [nats://h:1]\n  auditSpread: soon\n", "auditSpread: 'soon' is not a duration"),
    ("  servers: [nats://h:1]\n  summariesBucket: a.b\n", "summariesBucket: a bucket or domain name is letters"),
    ("  server: nats://h:1\n", "nats.server: unknown field (did you mean 'servers'?)"),
])
def test_a_mistake_in_the_nats_section_is_refused_at_its_line(tmp_path, section, said):
    with pytest.raises(UsageError) as refused:
        load(tmp_path, GOOD + "nats:\n" + section)
    assert said in str(refused.value)


@pytest.mark.parametrize("gates", ["", "gateSource: forge\n"])
def test_a_forge_and_nats_are_refused_together(tmp_path, gates):
    forge = "forge:\n  kind: github\n  apiUrl: https://api.github.com\n  repository: o/r\n  tokenEnv: T\n"
    with pytest.raises(UsageError, match="forge and nats: the NATS channel does not mirror records to a forge"):
        load(tmp_path, GOOD + forge + gates + "nats:\n  servers: [nats://h:4222]\n")
