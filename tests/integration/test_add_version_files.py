"""``add-version --file``: a model whose weights are ONNX external data is validated with them,
released with each file copied beside it, signed and pinned under ``files``, and a real site
(``reconciler run --once`` against a git smart-HTTP remote) deploys it; a file that is not beside
the model, or not there, is refused and the repo is left as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from test_release import commented_fleet, deploy_to_one_site, reconciler, tree  # noqa: F401 (a fixture)

from reconciler.devtools.onnx_builder import split_external_data


def split_candidate(ctx: dict) -> bytes:
    """The candidate with its weights moved out into weights/w.bin beside it; the weights' bytes."""
    candidate: Path = ctx["candidate"]
    main, files = split_external_data(candidate.read_bytes(), "weights/w.bin")
    candidate.write_bytes(main)
    (candidate.parent / "weights").mkdir()
    (candidate.parent / "weights" / "w.bin").write_bytes(files["weights/w.bin"])
    return files["weights/w.bin"]


def test_a_model_with_external_data_is_released_with_its_files_and_a_real_site_deploys_it(
        commented_fleet, tmp_path: Path) -> None:  # noqa: F811
    fleet = commented_fleet["fleet"]
    weights = split_candidate(commented_fleet)
    assert reconciler("add-version", "churn", "1.1.0", commented_fleet["candidate"], "--file", "weights/w.bin",
                      "--repo", fleet, "--key", commented_fleet["key"], "--trust-key", commented_fleet["pub"],
                      "--cases", commented_fleet["cases"]) == 0

    home = fleet / "models" / "churn" / "1.1.0"
    assert (home / "weights" / "w.bin").read_bytes() == weights
    version = yaml.safe_load((fleet / "models" / "churn" / "model.yaml").read_text())["spec"]["versions"][-1]
    assert version["artifacts"][0]["files"] == [{
        "path": "weights/w.bin", "digest": f"sha256:{hashlib.sha256(weights).hexdigest()}", "size": len(weights),
        "signature": {"uri": "models/churn/1.1.0/weights/w.bin.sig", "format": "cosign"}}]
    record = deploy_to_one_site(fleet, tmp_path, commented_fleet["pub"])
    assert (record["deployments"]["churn"]["state"], record["deployments"]["churn"]["activeVersion"]) == ("success", "1.1.0")
    [directory] = (tmp_path / "site" / "models").iterdir()
    assert (directory / "weights" / "w.bin").read_bytes() == weights


@pytest.mark.parametrize("name,says", [("../w.bin", "without '..'"), ("weights/none.bin", "is not a file"),
                                       ("model.onnx", "that name")])
def test_a_file_not_beside_the_model_is_refused_and_nothing_changes(
        commented_fleet, capsys, name: str, says: str) -> None:  # noqa: F811
    fleet = commented_fleet["fleet"]
    split_candidate(commented_fleet)
    before = tree(fleet)
    assert reconciler("add-version", "churn", "1.1.0", commented_fleet["candidate"], "--file", name,
                      "--repo", fleet, "--key", commented_fleet["key"]) != 0
    assert says in capsys.readouterr().err
    assert tree(fleet) == before


def test_without_its_files_a_model_with_external_data_is_refused(commented_fleet, capsys) -> None:  # noqa: F811
    fleet = commented_fleet["fleet"]
    split_candidate(commented_fleet)
    before = tree(fleet)
    assert reconciler("add-version", "churn", "1.1.0", commented_fleet["candidate"], "--repo", fleet,
                      "--key", commented_fleet["key"], "--cases", commented_fleet["cases"]) != 0
    assert "ModelLoadFailed" in capsys.readouterr().err
    assert tree(fleet) == before
