"""The head beacon end to end: nginx + fcgiwrap + git http-backend serving the example fleet (else,
where they are not installed, reconciler's own server, devtools/githttp.py, serving the file),
the shipped post-receive hook writing ``fleet.git.head``, and a real agent polling it. A push moves
the beacon and the next poll converges; a poll answered 304 starts no git process at the server;
a beacon that is stuck, answers 500 or garbage, or is not there at all never keeps a push from
the site (the failures fall back to git at once, the stuck one at its backstop)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.agent.loop import Agent
from reconciler.agent.wiring import build_agent
from reconciler.devtools.githttp import GitHttpServer, init_bare_repo, run_git
from reconciler.devtools.nginxgit import NginxGitServer, available, install_beacon_hook
from reconciler.devtools.processes import free_port
from reconciler.devtools.testing import EXAMPLE, FleetRemote, copy_example, git, without_progressive_delivery
from reconciler.settings import SiteConfig

SITE = "store-boston-01"
BACKSTOP = 600.0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FleetRemote, NginxGitServer | GitHttpServer]]:
    source = without_progressive_delivery(copy_example(tmp_path / "example"))
    bare = init_bare_repo(tmp_path / "srv", "fleet", source_dir=source)
    for key in ("http.receivepack", "uploadpack.allowFilter"):  # pushes (status refs too), partial clones
        run_git(bare, "config", key, "true")
    install_beacon_hook(bare)
    nginx = NginxGitServer(tmp_path / "srv", tmp_path / "run", workers=2) if available() else None
    with nginx or GitHttpServer(tmp_path / "srv") as server:
        url = server.url("fleet")
        git("clone", "-q", url, str(tmp_path / "clone"), cwd=tmp_path)
        yield FleetRemote(server, url, bare, tmp_path / "clone"), server


def site(fleet: FleetRemote, tmp_path: Path, beacon_url: str) -> tuple[Agent, list[float]]:
    """An agent polling ``beacon_url``, its clock for the backstop in the test's hands."""
    config = SiteConfig(site=SITE, repo=fleet.url, state=tmp_path / "state", interval="30s",
                        trust_keys=[EXAMPLE / "keys" / "demo.pub"],
                        head_beacon={"url": beacon_url, "backstop": f"{BACKSTOP:g}s"})
    agent = build_agent(config, None)
    now = [0.0]
    agent.heads.clock = lambda: now[0]
    agent.start()
    return agent, now


def backend_runs(server: NginxGitServer | GitHttpServer) -> int:
    """git http-backend processes the server has run (under nginx each logs its CPU time)."""
    if isinstance(server, GitHttpServer):
        return server.requests
    return len((server.run / "times.log").read_text().splitlines())


def push_change(fleet: FleetRemote, text: str) -> str:
    return fleet.commit_and_push({"README.md": text}, text)


def test_a_push_moves_the_beacon_and_the_next_poll_converges(served, tmp_path):
    fleet, server = served
    agent, now = site(fleet, tmp_path, server.beacon_url("fleet"))
    try:
        assert agent.reconcile_once().record.state == "success"
        now[0] = 30
        assert agent.reconcile_once().noop  # the beacon's first answer: the head git gave, no git asked
        before = backend_runs(server)
        for tick in range(2, 5):
            now[0] = 30 * tick
            assert agent.reconcile_once().noop
        assert backend_runs(server) == before  # three polls answered 304: no git process at the server
        pushed = push_change(fleet, "moved\n")
        assert (server.root / "fleet.git.head").read_text().strip() == pushed
        now[0] = 150
        moved = agent.reconcile_once()
        assert (moved.head, moved.record.observedCommit) == (pushed, pushed)
        again = push_change(fleet, "moved again within the second\n")  # the hook makes the ETag move anyway
        now[0] = 180
        assert agent.reconcile_once().head == again
    finally:
        agent.stop()


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def failing_beacon() -> Iterator[str]:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Failing) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}/fleet.git.head"
        server.shutdown()
        thread.join()


@pytest.mark.parametrize("kind", ["500", "garbage", "nothing listens", "no such file"])
def test_a_failing_beacon_falls_back_to_git_at_once(served, tmp_path, failing_beacon, kind):
    fleet, server = served
    (server.root / "garbage.git.head").write_text("<html>maintenance</html>\n")
    url = {"500": failing_beacon, "garbage": server.beacon_url("garbage"),
           "nothing listens": f"http://127.0.0.1:{free_port()}/fleet.git.head",
           "no such file": server.beacon_url("missing")}[kind]
    agent, now = site(fleet, tmp_path, url)
    try:
        assert agent.reconcile_once().record.state == "success"
        pushed = push_change(fleet, f"pushed while the beacon fails ({kind})\n")
        now[0] = 30
        moved = agent.reconcile_once()
        assert (moved.head, moved.record.observedCommit, moved.error) == (pushed, pushed, None)
        now[0] = 60
        assert agent.reconcile_once().noop
    finally:
        agent.stop()


@pytest.mark.parametrize("stuck", ["hook gone", "another repository's beacon"])
def test_a_stuck_beacon_delays_a_push_until_the_backstop(served, tmp_path, stuck):
    fleet, server = served
    if stuck == "hook gone":
        url = server.beacon_url("fleet")
    else:  # names a commit git does not have at this branch, and never moves
        install_beacon_hook(init_bare_repo(server.root, "other", source_dir=tmp_path / "example" / "sites"))
        url = server.beacon_url("other")
    agent, now = site(fleet, tmp_path, url)
    try:
        first = agent.reconcile_once()
        now[0] = 30
        assert agent.reconcile_once().noop  # the beacon's first answer, and its ETag
        (fleet.bare / "hooks" / "post-receive").unlink()  # the beacon stops moving
        pushed = push_change(fleet, "the beacon never hears of this\n")
        seen = []
        for tick in range(2, 23):
            now[0] = 30 * tick
            seen.append(agent.reconcile_once().head)
        moved = seen.index(pushed)
        assert seen[:moved] == [first.head] * moved  # 304s: nothing moved, as far as the beacon says
        assert set(seen[moved:]) == {pushed}
        # git asked last at 0 s or 30 s (when the beacon named another commit): then the backstop
        assert 30 * (moved + 2) in (BACKSTOP, BACKSTOP + 30)
        assert agent.last_record.observedCommit == pushed
    finally:
        agent.stop()
