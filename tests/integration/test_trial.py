"""A trial run does not publish: `run --once --dry-run` prints what the site would do and writes
nothing anywhere (no state directory, no status ref, no change to the fleet repo)."""

from __future__ import annotations

import pytest

from reconciler.cli.main import main
from reconciler.devtools.testing import EXAMPLE, git

SITE = "store-berlin-01"


def refs(repo) -> str:
    return git("for-each-ref", cwd=repo)


@pytest.mark.parametrize("trust", [[], ["--trust-key", str(EXAMPLE / "keys" / "demo.pub")]])
def test_a_dry_run_writes_nothing_anywhere(fleet, tmp_path, capsys, trust):
    state = tmp_path / "state"
    before = refs(fleet.bare), refs(fleet.clone)
    code = main(["run", "--once", "--dry-run", "--repo", fleet.url, "--site", SITE, "--state", str(state), *trust])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "deploy   demand-forecast" in out and "(dry run: nothing written)" in out
    assert ("NoTrustedKeys" in err) == (not trust)
    assert not state.exists()
    assert (refs(fleet.bare), refs(fleet.clone)) == before
    assert "refs/reconciler/status" not in refs(fleet.bare)


def test_a_dry_run_of_a_local_repo_reads_it_in_place(fleet, tmp_path, capsys):
    before = refs(fleet.clone), git("status", "--porcelain", cwd=fleet.clone)
    assert main(["run", "--once", "--dry-run", "--repo", str(fleet.clone), "--site", SITE,
                 "--state", str(tmp_path / "state")]) == 0
    assert "demand-forecast" in capsys.readouterr().out
    assert (refs(fleet.clone), git("status", "--porcelain", cwd=fleet.clone)) == before
    assert not (tmp_path / "state").exists()


def test_dry_run_needs_once(fleet, tmp_path, capsys):
    assert main(["run", "--dry-run", "--repo", fleet.url, "--site", SITE, "--state", str(tmp_path / "s")]) == 2
    assert "--dry-run goes with --once" in capsys.readouterr().err


def test_the_help_of_once_says_it_publishes(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "publishes the site's status record" in " ".join(capsys.readouterr().out.split())
