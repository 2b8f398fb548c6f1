"""Site settings as plain data: one spelling per key in site.yaml (camelCase), snake_case in code;
every path setting resolves against site.yaml's folder, and against ours when given on the command
line; listen is parsed on load."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from reconciler.agent.config import load_site_config
from reconciler.errors import UsageError
from reconciler.settings import Address, FetchLimits, PathsFrom, SiteConfig

GOOD = "site: store-boston-01\nrepo: https://git.example/fleet.git\nstate: state\n"


def test_every_path_setting_resolves_against_the_files_folder(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "site.yaml"
    path.parent.mkdir()
    path.write_text(GOOD + "sigstoreTrustedRoot: root.json\nstatusRepo: status.git\n"
                           "commitPolicy: {sshAllowedSigners: signers, gpgKeyring: keys/ring.gpg}\n")
    config = load_site_config(path, {})
    folder = path.parent.resolve()
    assert (config.state, config.sigstore_trusted_root) == (folder / "state", folder / "root.json")
    assert config.status_repo == str(folder / "status.git")
    assert config.commit_policy is not None
    assert (config.commit_policy.ssh_allowed_signers, config.commit_policy.gpg_keyring) == (
        folder / "signers", folder / "keys" / "ring.gpg")


def test_a_path_given_on_the_command_line_is_taken_as_given(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "site.yaml"
    path.parent.mkdir()
    path.write_text(GOOD + "trustKeys: [a.pub]\n")
    config = load_site_config(path, {"state": "elsewhere"})
    assert config.state == Path("elsewhere")
    assert config.trust_keys == [path.parent.resolve() / "a.pub"]


@pytest.mark.parametrize("key", ["status_repo", "stale_after", "trust_keys", "accept_history"])
def test_site_yaml_has_one_spelling_per_key(tmp_path: Path, key: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(GOOD + f"{key}: x\n")
    with pytest.raises(UsageError, match=f"{key}: unknown field"):
        load_site_config(path, {})


def test_code_names_settings_in_snake_case() -> None:
    limits = FetchLimits(read_timeout=2, ca_bundle=Path("/ca.pem"))
    assert (limits.read_timeout, limits.ca_bundle) == (2.0, Path("/ca.pem"))
    assert limits.model_dump(by_alias=True)["readTimeout"] == 2.0


@pytest.mark.parametrize(("listen", "parsed"), [
    ("127.0.0.1:8080", Address("127.0.0.1", 8080)), ("[::1]:0", Address("::1", 0)), (None, None),
])
def test_listen_is_parsed_on_load(listen: str | None, parsed: Address | None) -> None:
    config = SiteConfig.model_validate({"site": "s", "repo": "r", "state": "/s", "listen": listen},
                                       context=PathsFrom(Path("/etc")))
    assert config.listen == parsed


def test_a_bad_nested_path_is_refused_not_resolved() -> None:
    with pytest.raises(ValidationError, match="caBundle"):
        FetchLimits.model_validate({"caBundle": 7}, context=PathsFrom(Path("/etc")))
