"""Small sharp edges of the command line: --version, run --help, and status in an ordinary clone."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys

import pytest

from reconciler import __version__
from reconciler.devtools.githttp import init_bare_repo
from reconciler.devtools.testing import EXAMPLE, copy_example, git

SITE = "store-boston-01"


def reconciler(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_version():
    done = reconciler("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"reconciler {__version__}")


def test_run_help_describes_every_option_with_its_default_and_an_example():
    from reconciler.cli.main import _parser

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    run = commands.choices["run"]
    assert all(action.help for action in run._actions)
    text = reconciler("run", "--help").stdout
    for default in ("(default: main)", "(default: 30s)", "(default: do not serve)"):
        assert default in text
    assert "example:\n  reconciler run --repo https://" in text and "reconciler run --config" in text


@pytest.fixture
def reported_fleet(tmp_path):
    """A bare fleet repo one site has reported to (its status ref is there), and a clone of it."""
    bare = init_bare_repo(tmp_path / "srv", "fleet", source_dir=copy_example(tmp_path / "example", progressive=False))
    done = reconciler("run", "--once", "--repo", str(bare), "--site", SITE, "--state", str(tmp_path / "state"),
                      "--trust-key", str(EXAMPLE / "keys" / "demo.pub"))
    assert done.returncode == 0, done.stderr
    clone = tmp_path / "clone"
    git("clone", "-q", str(bare), str(clone), cwd=tmp_path)
    assert not git("for-each-ref", "refs/reconciler/", cwd=clone).strip()  # a clone lacks the status refs
    return bare, clone


def rows(done: subprocess.CompletedProcess) -> dict[str, dict]:
    assert done.returncode == 0, done.stderr
    return {row["site"]: row for row in json.loads(done.stdout)["sites"]}


def test_status_in_a_clone_fetches_the_records_from_origin_and_leaves_the_clone_alone(reported_fleet):
    _, clone = reported_fleet
    done = reconciler("status", "--format", "json", cwd=clone)
    assert (rows(done)[SITE]["state"], rows(done)[SITE]["stale"]) == ("success", False)
    assert done.stderr == ""
    assert not git("for-each-ref", "refs/reconciler/", cwd=clone).strip()


def test_status_says_how_when_origin_cannot_be_reached(reported_fleet):
    bare, clone = reported_fleet
    shutil.rmtree(bare)
    done = reconciler("status", "--repo", str(clone), "--format", "json")
    assert rows(done)[SITE]["state"] == "unknown"
    assert "cannot fetch the status records from origin" in done.stderr
    assert "git fetch origin '+refs/reconciler/status/*:refs/reconciler/status/*'" in done.stderr


def test_status_in_a_repo_without_records_or_origin_says_how(reported_fleet):
    _, clone = reported_fleet
    git("remote", "remove", "origin", cwd=clone)
    done = reconciler("status", "--repo", str(clone))
    assert done.returncode == 0
    assert "holds no status records and has no remote 'origin'" in done.stderr and "--repo" in done.stderr


def test_status_of_the_fleet_repo_itself_reads_its_refs(reported_fleet):
    bare, _ = reported_fleet
    done = reconciler("status", "--repo", str(bare), "--format", "json")
    assert rows(done)[SITE]["state"] == "success" and done.stderr == ""


def test_verify_refuses_a_bundle_whose_timestamp_does_not_parse(tmp_path):
    from reconciler.devtools.trust_fixtures import IDENTITY, ISSUER, LocalSigstore

    sigstore = LocalSigstore()
    (tmp_path / "model.onnx").write_bytes(b"model bytes")
    bundle = sigstore.sign_blob(b"model bytes")
    bundle["verificationMaterial"]["tlogEntries"][0].pop("inclusionPromise")
    bundle["verificationMaterial"]["timestampVerificationData"] = {
        "rfc3161Timestamps": [{"signedTimestamp": "bm90IGEgdGltZXN0YW1w"}]}
    (tmp_path / "model.onnx.bundle").write_text(json.dumps(bundle))
    done = reconciler("verify", str(tmp_path / "model.onnx"), "--bundle", str(tmp_path / "model.onnx.bundle"),
                      "--identity", IDENTITY, "--issuer", ISSUER,
                      "--trusted-root", str(sigstore.write_trusted_root(tmp_path / "root.json")))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "SignatureMalformed" in done.stderr and "Invalid Timestamp Response" in done.stderr


@pytest.mark.parametrize("args", [
    ["plan", "--site", "x", "--repo", "{tmp}", "--rev", "main"],
    ["plan", "--base", "a", "--head", "b", "--repo", "{tmp}"],
    ["status", "--repo", "{tmp}"],
    ["status", "--repo", "{tmp}/missing"],
    ["run", "--config", "{tmp}/missing.yaml"],
    ["run", "--once", "--repo", "{tmp}/missing", "--site", "a", "--state", "{tmp}/state", "--listen", "127.0.0.1:99999"],
    ["run", "--once", "--repo", "{tmp}/missing", "--site", "a", "--state", "{tmp}/state", "--listen", "127.0.0.1:0",
     "--grpc-listen", "nope"],
    ["run", "--once", "--repo", "{tmp}/missing", "--site", "a", "--state", "{tmp}/state", "--grpc-listen", "127.0.0.1:0"],
    ["serve", "--state", "{tmp}", "--listen", "127.0.0.1:0"],
    ["verify", "{tmp}/missing", "--key", "{tmp}/missing.pub"],
])
def test_bad_command_lines_are_refused_in_a_sentence(tmp_path, args):
    done = reconciler(*(arg.replace("{tmp}", str(tmp_path)) for arg in args))
    assert done.returncode in (1, 2), done.stderr
    assert done.stderr.startswith("reconciler: ") and "Traceback" not in done.stderr
    assert "unexpected" not in done.stderr


def test_a_second_agent_on_a_held_state_directory_is_refused_before_it_opens_its_port(tmp_path):
    from reconciler.agent.statedir import StateDir
    from reconciler.devtools.processes import free_port

    held = StateDir(tmp_path / "state")
    held.lock()
    try:
        done = reconciler("run", "--once", "--repo", str(tmp_path / "fleet"), "--site", SITE,
                          "--state", str(tmp_path / "state"), "--listen", f"127.0.0.1:{free_port()}")
    finally:
        held.unlock()
    assert done.returncode != 0 and "StateLocked" in done.stderr
    assert "serving on" not in done.stderr


def test_an_unreadable_trust_key_stops_the_agent_before_it_opens_its_port(tmp_path):
    from reconciler.devtools.processes import free_port

    done = reconciler("run", "--once", "--repo", str(tmp_path / "fleet"), "--site", SITE, "--state",
                      str(tmp_path / "state"), "--listen", f"127.0.0.1:{free_port()}",
                      "--trust-key", str(tmp_path / "release.pub"))
    assert done.returncode == 2 and "TrustKeyUnreadable" in done.stderr
    assert "serving on" not in done.stderr


def test_an_agent_that_cannot_listen_stops_at_once_with_exit_2(tmp_path):
    """A listen address in use needs an operator: no retry, one sentence naming the reason."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = reconciler("run", "--repo", str(tmp_path / "fleet"), "--site", "a", "--state", str(tmp_path / "state"),
                          "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"reconciler: ListenFailed: cannot listen on 127.0.0.1:{port}: ")
