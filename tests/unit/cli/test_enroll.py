"""``reconciler enroll``: the key pair made on the site, site.yaml, the Site document for a pull
request, rotation; every refusal leaves nothing behind."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from reconciler import trust
from reconciler.agent.config import load_site_config
from reconciler.cli.main import main
from reconciler.manifests.models import Site


def enroll(tmp_path: Path, *extra: str) -> int:
    return main(["enroll", "--site", "store-9", "--state", str(tmp_path / "state"), *extra])


def site_document(fleet: Path) -> Site:
    return Site.model_validate(yaml.safe_load((fleet / "sites" / "store-9.yaml").read_text()))


def public_of(key_file: Path) -> str:
    return trust.public_key_pem(trust.load_private_key(key_file.read_bytes())).decode()


def test_enroll_writes_the_key_on_the_site_and_the_public_half_for_a_pull_request(tmp_path):
    assert enroll(tmp_path, "--labels", "tier=store,region=eu", "--fleet", str(tmp_path / "fleet"),
                  "--repo", "https://git.example/fleet.git", "--listen", "127.0.0.1:8080") == 0
    config = load_site_config(tmp_path / "state" / "site.yaml", {})
    assert (config.site, config.repo, config.state) == ("store-9", "https://git.example/fleet.git", tmp_path / "state")
    [key_file] = config.status_keys
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    site = site_document(tmp_path / "fleet")
    assert site.metadata.labels == {"tier": "store", "region": "eu"}
    [enrolled] = site.spec.statusKeys
    assert enrolled.publicKey == public_of(key_file) and not enrolled.retiring
    assert "PRIVATE" not in (tmp_path / "fleet" / "sites" / "store-9.yaml").read_text()


def test_without_a_checkout_the_site_document_is_printed(tmp_path, capsys):
    assert enroll(tmp_path, "--labels", "tier=store", "--repo", "https://git.example/fleet.git") == 0
    printed = Site.model_validate(yaml.safe_load(capsys.readouterr().out))
    [key_file] = load_site_config(tmp_path / "state" / "site.yaml", {}).status_keys
    assert printed.spec.statusKeys[0].publicKey == public_of(key_file)


def test_rotate_adds_a_key_and_marks_the_old_one_retiring(tmp_path):
    fleet = str(tmp_path / "fleet")
    assert enroll(tmp_path, "--labels", "tier=store", "--fleet", fleet, "--repo", "https://git.example/f.git") == 0
    assert enroll(tmp_path, "--rotate", "--fleet", fleet) == 0
    old_file, new_file = load_site_config(tmp_path / "state" / "site.yaml", {}).status_keys
    old, new = site_document(tmp_path / "fleet").spec.statusKeys
    assert (old.retiring, new.retiring) == (True, False)
    assert (old.publicKey, new.publicKey) == (public_of(old_file), public_of(new_file))
    assert site_document(tmp_path / "fleet").metadata.labels == {"tier": "store"}


@pytest.mark.parametrize(("first", "second"), [
    (None, ["--labels", "bad key=1", "--repo", "r"]),  # labels that are not labels
    (None, ["--labels", "tier", "--repo", "r"]),  # not k=v
    (None, ["--labels", "tier=store"]),  # no repo for site.yaml
    (None, ["--rotate", "--fleet", "FLEET"]),  # nothing enrolled to rotate
    (None, ["--repo", "r", "--trust-key", "MISSING"]),  # a trust key that is not there (a typo)
    (None, ["--repo", "r", "--trust-key", "NOTAKEY"]),  # a file that is no public key
    (["--repo", "r", "--fleet", "FLEET"], ["--repo", "r", "--fleet", "FLEET"]),  # enrolled already
    (["--repo", "r", "--fleet", "FLEET"], ["--rotate"]),  # a rotation needs the checkout
    (["--repo", "r", "--fleet", "FLEET"], ["--rotate", "--fleet", "FLEET", "--labels", "tier=x"]),  # labels are Git's
])
def test_refusals_write_nothing(tmp_path, capsys, first, second):
    def args(given):
        named = {"FLEET": tmp_path / "fleet", "MISSING": tmp_path / "release.pub", "NOTAKEY": tmp_path / "notes.txt"}
        return [str(named[arg]) if arg in named else arg for arg in given]

    (tmp_path / "notes.txt").write_text("not a key\n")

    if first:
        assert enroll(tmp_path, *args(first)) == 0
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    texts = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert enroll(tmp_path, *args(second)) == 2
    assert "reconciler:" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == texts
