"""site.yaml is refused as the manifests are: file:line:col, what is wrong, did you mean; paths
resolve against its folder; command-line settings win and are refused as such."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.agent.config import build_site_config, load_site_config
from reconciler.errors import UsageError
from reconciler.settings import Address

GOOD = "site: store-boston-01\nrepo: https://git.example/fleet.git\nstate: state\n"


def refusal(tmp_path: Path, text: str, **overrides: object) -> list[str]:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as refused:
        load_site_config(path, overrides)
    return str(refused.value).replace(f"{path}:", "site.yaml:").splitlines()


@pytest.mark.parametrize(("text", "said"), [
    (GOOD + "listen: 127.0.0.1:99999\n",
     "site.yaml:4:9: error: listen: port 99999 of '127.0.0.1:99999' is not a TCP port (0 to 65535)"),
    (GOOD + "listen: 8080\n", "site.yaml:4:9: error: listen: should be a string (got 8080); quote it to keep it a string"),
    (GOOD + "listen: localhost\n",
     "site.yaml:4:9: error: listen: should be HOST:PORT, e.g. 127.0.0.1:8080 (got 'localhost')"),
    (GOOD + "listen: 'bad host!:80'\n",
     "site.yaml:4:9: error: listen: 'bad host!' of 'bad host!:80' is neither an IP address nor a host name"),
    (GOOD + "listen: 127.0.0.1:8080\ngrpcListen: localhost\n",
     "site.yaml:5:13: error: grpcListen: should be HOST:PORT, e.g. 127.0.0.1:8080 (got 'localhost')"),
    (GOOD + "grpcListen: 127.0.0.1:9000\n",
     "site.yaml:4:13: error: grpcListen: needs listen too: health, metrics and flags are served over HTTP "
     "(got '127.0.0.1:9000')"),
    (GOOD + "trustKeys: /etc/k.pub\n", "site.yaml:4:12: error: trustKeys: should be a list (got '/etc/k.pub')"),
    (GOOD + "intervall: 30s\n", "site.yaml:4:1: error: intervall: unknown field (did you mean 'interval'?)"),
    (GOOD + "validation:\n  timeot: 5s\n",
     "site.yaml:5:3: error: validation.timeot: unknown field (did you mean 'timeout'?)"),
    (GOOD + "jitter: 2\n", "site.yaml:4:9: error: jitter: should be less than or equal to 1 (got 2)"),
    (GOOD + "site: other\n", "site.yaml:4:1: error: duplicate key 'site' (first at line 1)"),
    ("site: [store\n", "site.yaml:2:1: error: malformed YAML: did not find expected ',' or ']' "
                       "(while parsing a flow sequence)"),
    ("- site\n", "site.yaml:1:1: error: a site config is a mapping of settings"),
    ("repo: x\nstate: s\n", "site.yaml:1:1: error: site: required field is missing"),
    ("a: &loop [*loop]\n", "site.yaml:1:1: error: a: unknown field (allowed: site, repo, branch, state, listen, "
                            "grpcListen, statusRepo, summaryRepo, fetchSpread, interval, headBeacon, staleAfter, jitter, trustKeys, trustIdentities, sigstoreTrustedRoot, statusKeys, "
                            "acceptHistory, commitPolicy, forge, gateSource, nats, validation, fetch, batch, executionProviders, "
                            "inventoryDir, evaluation, evaluationInterval)"),
    (GOOD + "headBeacon:\n  url: git.example/fleet.head\n",
     "site.yaml:5:8: error: headBeacon.url: must be an http(s) URL such as https://git.example/fleet.git.head"),
    (GOOD + "headBeacon:\n  url: https://u:p@git.example/fleet.head\n",
     "site.yaml:5:8: error: headBeacon.url: credentials in the URL are refused; give them in fetch.auth for its host"),
    (GOOD + "headBeacon:\n  url: https://git.example/fleet.head\n  backstop: soon\n",
     "site.yaml:6:13: error: headBeacon.backstop:"),
    (GOOD + "headBeacon: https://git.example/fleet.head\n",
     "site.yaml:4:13: error: headBeacon: should be a mapping"),
    (GOOD + 'trustKeys: ["k\\x00.pub"]\n', "site.yaml:4:13: error: a NUL character cannot be in a setting (nor in a path)"),
])
def test_a_mistake_in_site_yaml_is_refused_at_its_line(tmp_path, text, said):
    assert any(line.startswith(said) for line in refusal(tmp_path, text))


def test_every_mistake_is_said_at_once(tmp_path):
    said = refusal(tmp_path, GOOD + "listen: 127.0.0.1:99999\ntrustKeys: /etc/k.pub\nintervall: 1s\n")
    assert [line.split(": error:")[0] for line in said] == ["site.yaml:4:9", "site.yaml:5:12", "site.yaml:6:1"]


def test_a_command_line_setting_is_refused_as_such(tmp_path):
    said = refusal(tmp_path, GOOD + "intervall: 1s\n", listen="127.0.0.1:70000")
    assert said == ["site.yaml:4:1: error: intervall: unknown field (did you mean 'interval'?)",
                    "invalid site settings (command line): listen: port 70000 of '127.0.0.1:70000' is not "
                    "a TCP port (0 to 65535)"]


def test_a_command_line_setting_replaces_a_bad_one_of_the_file(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(GOOD + "listen: nonsense\n")
    assert load_site_config(path, {"listen": "127.0.0.1:8080"}).listen == ("127.0.0.1", 8080)


def test_paths_resolve_against_the_files_folder(tmp_path):
    path = tmp_path / "conf" / "site.yaml"
    path.parent.mkdir()
    path.write_text(GOOD + "trustKeys: [keys/a.pub]\nfetch:\n  caBundle: ca.pem\n")
    config = load_site_config(path, {})
    assert config.state == tmp_path / "conf" / "state"
    assert config.trust_keys == [tmp_path / "conf" / "keys" / "a.pub"]
    assert config.fetch.ca_bundle == tmp_path / "conf" / "ca.pem"


@pytest.mark.parametrize(("address", "parsed"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:9000", ("::1", 9000)), ("localhost:0", ("localhost", 0)),
    ("edge-7.example.org:65535", ("edge-7.example.org", 65535)),
])
def test_listen_addresses(address, parsed):
    assert Address.parse(address) == parsed
    assert build_site_config({"site": "s", "repo": "r", "state": "/s", "listen": address}).listen == parsed


@pytest.mark.parametrize("address", ["127.0.0.1:99999", ":8080", "127.0.0.1:", "127.0.0.1:-1", "exa mple:80"])
def test_bad_listen_addresses_are_usage_errors(address):
    with pytest.raises(UsageError, match="invalid site settings \\(command line\\): listen: "):
        build_site_config({"site": "s", "repo": "r", "state": "/s", "listen": address})


@pytest.mark.parametrize(("given", "local"), [
    ("fleet", True), ("../fleet", True), ("/srv/git/fleet.git", True), ("./a:b", True),
    ("https://git.example/fleet.git", False), ("file:///srv/fleet.git", False),
    ("git@git.example:org/fleet.git", False), ("git.example:fleet.git", False),
])
def test_a_relative_repo_path_resolves_where_it_was_given(tmp_path, monkeypatch, given, local):
    """git resolves a relative path against its own working directory, the cache's: a path in
    site.yaml resolves against its folder, one on the command line against ours; URLs stay."""
    path = tmp_path / "conf" / "site.yaml"
    path.parent.mkdir()
    path.write_text(f"site: store-boston-01\nrepo: '{given}'\nstatusRepo: '{given}'\nstate: state\n")
    from_file = load_site_config(path, {})
    monkeypatch.chdir(tmp_path)
    from_command_line = build_site_config({"site": "store-boston-01", "repo": given, "state": tmp_path})
    if local:
        assert from_file.repo == from_file.status_repo == str((path.parent / given).resolve())
        assert from_command_line.repo == str((tmp_path / given).resolve())
    else:
        assert from_file.repo == from_file.status_repo == from_command_line.repo == given


def test_grpc_listen_from_site_yaml_or_the_command_line(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(GOOD + "listen: 127.0.0.1:8080\ngrpcListen: '[::1]:9000'\n")
    assert load_site_config(path, {}).grpc_listen == ("::1", 9000)
    assert load_site_config(path, {"grpcListen": "127.0.0.1:9001"}).grpc_listen == ("127.0.0.1", 9001)
    path.write_text(GOOD + "listen: 127.0.0.1:8080\n")
    assert load_site_config(path, {}).grpc_listen is None


def test_a_head_beacon_with_its_default_backstop(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(GOOD + "headBeacon:\n  url: https://git.example/fleet.git.head\n")
    beacon = load_site_config(path, {}).head_beacon
    assert (beacon.url, beacon.backstop.total_seconds()) == ("https://git.example/fleet.git.head", 600)


_FORGE = "forge:\n  kind: github\n  repository: o/r\n"


@pytest.mark.parametrize(("section", "said", "secret"), [
    (_FORGE + "  apiUrl: https://api.github.com\n  tokenEnv: ghp_s3cretT0ken\n",
     "forge.tokenEnv: tokenEnv must be the name of an environment variable (A-Z, 0-9, _), not the token",
     "s3cretT0ken"),
    (_FORGE + "  apiUrl: https://bot:hunter2@api.github.com\n  tokenEnv: T\n",
     "forge.apiUrl: apiUrl must not carry credentials: name the token's variable in tokenEnv "
     "(got 'https://bot:***@api.github.com')", "hunter2"),
    ("headBeacon:\n  url: https://site:hunter2@git.example/fleet.git.head\n",
     "headBeacon.url: credentials in the URL are refused; give them in fetch.auth for its host", "hunter2"),
    ("nats:\n  servers: [nats://h:1]\n  tokenEnv: s3cret-t0ken\n",
     "nats.tokenEnv: tokenEnv must be the name of an environment variable (A-Z, 0-9, _), not the token", "s3cret"),
])
def test_a_secret_put_where_its_name_belongs_is_refused_without_echoing_it(tmp_path, section, said, secret):
    """Refusals are printed in CI logs and pull-request comments."""
    said_lines = refusal(tmp_path, GOOD + section)
    assert any(said in line for line in said_lines), said_lines
    assert secret not in "\n".join(said_lines)
