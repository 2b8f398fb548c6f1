"""Forge commit statuses, against a fake forge on loopback that validates every request against the
documented shapes of GitHub, Gitea/Forgejo and GitLab (tests/forge_fake.py)."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from email.utils import formatdate

import pytest
from forge_fake import FakeForge, serve
from pydantic import ValidationError

from reconciler.errors import ReconcilerError, Stalled, Transient
from reconciler.settings import ForgeConfig
from reconciler.status.forge import (
    CommitStatus,
    deployment_context,
    describe_deployment,
    fit_description,
    gate_pairs,
    split_description,
    statuses_for_record,
    target_url,
    truncate,
    wave_context,
    wave_status,
)
from reconciler.status.forge_client import ForgeStatuses
from reconciler.status.record import DeploymentStatus, State, StatusRecord

TOKEN = "tok_" + secrets.token_hex(20)  # unique per run, so a leak cannot hide among other text
TOKEN_ENV = "RECONCILER_TEST_FORGE_TOKEN"
SHA = hashlib.sha1(b"fleet commit").hexdigest()
NOW = 1_750_000_000.0  # the clock the client sees
SINCE = datetime(2025, 6, 1, tzinfo=UTC)
KINDS = ["github", "gitea", "forgejo", "gitlab"]
CTX = deployment_context("churn", "store-1")


class Sleeps(list[float]):
    """Stands in for time.sleep: records each delay asked for, waits for none."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def start_forge(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeForge]]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with ExitStack() as stack:
        yield lambda kind, **options: stack.enter_context(serve(kind, TOKEN, **options))


@pytest.fixture(params=KINDS)
def forge(request: pytest.FixtureRequest, start_forge: Callable[..., FakeForge]) -> FakeForge:
    return start_forge(request.param)


def config_for(forge: FakeForge, **overrides: object) -> ForgeConfig:
    values = {"kind": forge.kind, "apiUrl": forge.api_url, "allowHttp": True, "repository": forge.repository,
              "tokenEnv": TOKEN_ENV}
    return ForgeConfig.model_validate({**values, **overrides})


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def client_for(forge: FakeForge, sleeps: Sleeps, **overrides: object) -> ForgeStatuses:
    return ForgeStatuses(config_for(forge, **overrides), sleep=sleeps, clock=lambda: NOW)


def status(state: State = "success", description: str = "1.1.0 serving (was 1.0.0)", context: str = CTX,
           url: str | None = None) -> CommitStatus:
    return CommitStatus(context=context, state=state, description=description, target_url=url)


def read_back(client: ForgeStatuses) -> dict[str, CommitStatus]:
    """What ``read_statuses`` gives, without the forge's times and counts."""
    return {context: CommitStatus.model_validate(shown.model_dump(exclude={"at", "changes"}))
            for context, shown in client.read_statuses(SHA).items()}


# --- publishing and deduplication -------------------------------------------------------------

def test_first_publish_posts_all_a_repeat_posts_nothing_a_change_posts_one(forge: FakeForge, sleeps: Sleeps) -> None:
    other = deployment_context("fraud", "store-1")
    wanted = [status(url="https://dash.example/churn/store-1"), status("pending", "2.0.0 pending", other)]
    with client_for(forge, sleeps) as client:
        assert client.publish(SHA, wanted) == wanted
        assert [seen.body[forge_name_field(forge)] for seen in forge.posts()] == [CTX, other]

        forge.log.clear()
        assert client.publish(SHA, wanted) == []
        assert forge.posts() == [] and len(forge.gets()) == 1

        forge.log.clear()
        changed = [wanted[0], status("failure", "failure: ArtifactDigestMismatch on 2.0.0", other)]
        assert client.publish(SHA, changed) == [changed[1]]
        assert [seen.body[forge_name_field(forge)] for seen in forge.posts()] == [other]
    assert forge.shown(SHA)[CTX].target_url == "https://dash.example/churn/store-1"
    assert sleeps == []


def forge_name_field(forge: FakeForge) -> str:
    return "name" if forge.kind == "gitlab" else "context"


def test_a_changed_description_or_link_alone_is_posted(forge: FakeForge, sleeps: Sleeps) -> None:
    with client_for(forge, sleeps) as client:
        client.publish(SHA, [status()])
        assert client.publish(SHA, [status(description="1.1.0 serving")]) == [status(description="1.1.0 serving")]
        assert client.publish(SHA, [status(description="1.1.0 serving", url="https://x.example/1")]) != []
    assert len(forge.posts()) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_every_page_is_read_and_the_newest_status_per_context_wins(
        kind: str, start_forge: Callable[..., FakeForge], sleeps: Sleeps) -> None:
    forge = start_forge(kind, max_page_size=10)
    forge.seed(SHA, CTX, "success", "1.0.0 serving")  # older, and on the last page for newest-first forges
    for number in range(22):
        forge.seed(SHA, f"ci/job-{number}", "success", "passed")
    newest = "pending" if kind != "gitlab" else "running"
    forge.seed(SHA, CTX, newest, "1.1.0 progressing at 20% (serving 1.0.0): Canary: step 1")
    state: State = "pending" if kind != "gitlab" else "progressing"
    with client_for(forge, sleeps) as client:
        assert client.publish(SHA, [status(state, "1.1.0 progressing at 20% (serving 1.0.0): Canary: step 1")]) == []
        assert len(forge.gets()) == 3  # 24 statuses (GitLab: 23 names) in pages of 10
        assert client.publish(SHA, [status("success", "1.0.0 serving")]) == [status("success", "1.0.0 serving")]


# --- the forges' vocabularies -----------------------------------------------------------------

GITHUB_NAMES = {"pending": "pending", "progressing": "pending", "success": "success",
                "failure": "failure", "aborted": "failure", "error": "error"}
GITLAB_NAMES = {"pending": "pending", "progressing": "running", "success": "success",
                "failure": "failed", "aborted": "canceled", "error": "failed"}
GITHUB_READ_BACK = {"pending": "pending", "progressing": "pending", "success": "success",
                    "failure": "failure", "aborted": "failure", "error": "error"}
GITLAB_READ_BACK = {"pending": "pending", "progressing": "progressing", "success": "success",
                    "failure": "failure", "aborted": "aborted", "error": "failure"}
STATE_TABLE = [
    (kind, ours, (GITLAB_NAMES if kind == "gitlab" else GITHUB_NAMES)[ours],
     (GITLAB_READ_BACK if kind == "gitlab" else GITHUB_READ_BACK)[ours])
    for kind in KINDS for ours in GITHUB_NAMES
]


@pytest.mark.parametrize(("kind", "ours", "theirs", "lossy"), STATE_TABLE)
def test_states_are_posted_in_each_forges_names_and_read_back(
        kind: str, ours: State, theirs: str, lossy: State, start_forge: Callable[..., FakeForge],
        sleeps: Sleeps) -> None:
    forge = start_forge(kind)
    with client_for(forge, sleeps) as client:
        client.publish(SHA, [status(ours, f"{ours} here")])
        assert forge.shown(SHA)[CTX].state == theirs
        assert read_back(client) == {CTX: status(lossy, f"{ours} here")}


@pytest.mark.parametrize(("kind", "ours"), [(kind, ours) for kind in KINDS for ours in GITHUB_NAMES])
def test_the_state_in_the_description_is_read_back_exactly(
        kind: str, ours: State, start_forge: Callable[..., FakeForge], sleeps: Sleeps) -> None:
    forge = start_forge(kind)
    with client_for(forge, sleeps) as client:
        client.publish(SHA, [status(ours, f"{ours} here · state={ours} rollout=3f2a1c9e0b7d")])
        assert read_back(client) == {CTX: status(ours, f"{ours} here · state={ours} rollout=3f2a1c9e0b7d")}


def test_a_description_contradicting_the_forges_state_gives_the_forges(
        start_forge: Callable[..., FakeForge], sleeps: Sleeps, caplog: pytest.LogCaptureFixture) -> None:
    forge = start_forge("github")
    forge.seed(SHA, CTX, "failure", "1.1.0 serving · state=success rollout=3f2a1c9e0b7d")
    with client_for(forge, sleeps) as client:
        assert read_back(client)[CTX].state == "failure"
    assert "says state=success but the forge shows 'failure'" in caplog.text


@pytest.mark.parametrize(("kind", "limit"), [("github", 140), ("gitea", 255), ("forgejo", 255), ("gitlab", 255)])
def test_long_descriptions_are_cut_to_the_forges_limit(
        kind: str, limit: int, start_forge: Callable[..., FakeForge], sleeps: Sleeps) -> None:
    forge = start_forge(kind)
    long = "failure: ValidationFailed on 1.1.0, serving 1.0.0: " + "output 0 differs from the expected value; " * 20
    with client_for(forge, sleeps) as client:
        [posted] = client.publish(SHA, [status("failure", long)])
        assert client.publish(SHA, [status("failure", long)]) == []  # the cut text is what the forge shows
    assert limit - 1 <= len(posted.description) <= limit and posted.description.endswith("…")
    assert forge.shown(SHA)[CTX].description == posted.description


@pytest.mark.parametrize(("text", "limit", "expected"), [
    ("1.1.0 serving", 140, "1.1.0 serving"),
    ("  two\n lines\tand  spaces ", 140, "two lines and spaces"),
    ("abcdefghij", 10, "abcdefghij"),
    ("abcdefghijk", 10, "abcdefghi…"),
    ("abcd efghijk", 6, "abcd…"),  # no space before the ellipsis
    ("abe\u0301\u0301cdef", 5, "ab…"),  # é with its accents stays whole or goes whole
    ("日本語のメッセージです", 5, "日本語の…"),
])
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected
    assert len(truncate(text, limit)) <= limit


def test_gitlab_in_flight_jobs_only_move_forward(start_forge: Callable[..., FakeForge], sleeps: Sleeps) -> None:
    """GitLab refuses pending -> pending, running -> running and running -> pending (400); the
    fake refuses them as GitLab does, so every publish below would stall if one were sent."""
    forge = start_forge("gitlab")
    with client_for(forge, sleeps) as client:
        steps: list[tuple[State, str, bool]] = [
            ("pending", "1.1.0 pending: WaitingForWave", True),
            ("pending", "1.1.0 pending: Downloading", False),
            ("progressing", "1.1.0 progressing", True),
            ("progressing", "1.1.0 progressing at 50%", False),
            ("pending", "1.2.0 pending", False),
            ("success", "1.1.0 serving", True),
            ("pending", "1.2.0 pending", True),  # a finished job is followed by a new one
        ]
        for state, description, posts in steps:
            assert client.publish(SHA, [status(state, description)]) == ([status(state, description)] if posts else [])
    assert forge.shown(SHA)[CTX].state == "pending"


def test_read_statuses_returns_only_our_contexts(start_forge: Callable[..., FakeForge], sleeps: Sleeps,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    forge = start_forge("gitea")
    forge.seed(SHA, "ci/build", "success", "passed")
    forge.seed(SHA, CTX, "success", "1.0.0 serving")
    forge.seed(SHA, CTX, "failure", "failure: Boom on 1.1.0")
    forge.seed(SHA, deployment_context("other", "store-1"), "warning", "not ours to read")
    with client_for(forge, sleeps) as client:
        assert read_back(client) == {CTX: status("failure", "failure: Boom on 1.1.0")}
        assert client.read_statuses(SHA)[CTX].changes == 2  # what a gate needs to know: it changed on this commit
    assert "unknown state 'warning'" in caplog.text


# --- the forge's own times --------------------------------------------------------------------

T1, T2, T3 = 1_750_000_000, 1_750_000_060, 1_750_000_125


@pytest.mark.parametrize("kind", KINDS)
def test_each_status_read_back_carries_the_forges_time_of_its_newest_change(
        kind: str, start_forge: Callable[..., FakeForge], sleeps: Sleeps) -> None:
    forge = start_forge(kind)
    other = deployment_context("fraud", "store-1")
    with client_for(forge, sleeps) as client:
        for clock, state in ((T1, "pending"), (T2, "progressing"), (T3, "success")):
            forge.clock = lambda clock=clock: clock + 0.25  # GitLab keeps the fraction, the others whole seconds
            client.publish(SHA, [status(state, f"1.1.0 {state}"), status("pending", "2.0.0 pending", other)])
            shown = client.read_statuses(SHA)
            assert shown[CTX].at == datetime.fromtimestamp(clock + (0.25 if kind == "gitlab" else 0), UTC)
            assert shown[other].at == datetime.fromtimestamp(T1 + (0.25 if kind == "gitlab" else 0), UTC)
    [listed] = [entry for entry in forge.listing(SHA) if entry.get("id") == forge.shown(SHA)[CTX].id]
    assert set(listed) >= ({"created_at", "started_at", "finished_at"} if kind == "gitlab" else
                           {"created_at", "updated_at"})


@pytest.mark.parametrize(("item", "expected"), [
    ({"created_at": "2025-06-01T10:00:00Z", "updated_at": "2025-06-01T10:00:00Z"}, "2025-06-01T10:00:00+00:00"),
    ({"created_at": "2025-06-01T12:00:00+02:00", "updated_at": "2025-06-01T12:00:00+02:00"},
     "2025-06-01T10:00:00+00:00"),  # Gitea: the server's zone
    ({"created_at": "2025-06-01T10:00:00.125Z", "started_at": "2025-06-01T10:01:00.500Z",
      "finished_at": "2025-06-01T10:02:00.750Z"}, "2025-06-01T10:02:00.750000+00:00"),  # GitLab: the job's last step
    ({"created_at": "2025-06-01T10:00:00.125Z", "started_at": None, "finished_at": None},
     "2025-06-01T10:00:00.125000+00:00"),
    ({"created_at": "2025-06-01T10:00:00Z", "updated_at": "yesterday"}, "2025-06-01T10:00:00+00:00"),
])
def test_the_forges_time_formats(item: dict[str, object], expected: str, start_forge: Callable[..., FakeForge],
                                 sleeps: Sleeps) -> None:
    forge = start_forge("github")
    forge.answer_next(200, body=[{"id": 1, "state": "success", "context": CTX, "description": "ok", **item}])
    with client_for(forge, sleeps) as client:
        assert client.read_statuses(SHA)[CTX].at.isoformat() == expected


@pytest.mark.parametrize("times", [{}, {"created_at": "2025-06-01T10:00:00"}, {"created_at": 1_750_000_000},
                                   {"created_at": "last tuesday"}])
def test_a_status_without_a_time_with_a_zone_is_skipped(
        times: dict[str, object], start_forge: Callable[..., FakeForge], sleeps: Sleeps,
        caplog: pytest.LogCaptureFixture) -> None:
    forge = start_forge("github")
    forge.answer_next(200, body=[{"id": 1, "state": "success", "context": CTX, "description": "ok", **times}])
    with client_for(forge, sleeps) as client:
        assert client.read_statuses(SHA) == {}
    assert "gives no time" in caplog.text


def test_gitlab_project_path_is_sent_url_encoded(start_forge: Callable[..., FakeForge], sleeps: Sleeps) -> None:
    forge = start_forge("gitlab", repository="ml/fleets/retail")
    for repository in ("ml/fleets/retail", "ml%2Ffleets%2Fretail"):
        with client_for(forge, sleeps, repository=repository) as client:
            client.publish(SHA, [status(description=repository)])
    assert [seen.path.split("/")[4] for seen in forge.posts()] == ["ml%2Ffleets%2Fretail"] * 2


# --- throttling, outages and refusals ---------------------------------------------------------

def test_429_waits_as_long_as_retry_after_says(forge: FakeForge, sleeps: Sleeps) -> None:
    forge.answer_next(429, {"Retry-After": "1"})
    with client_for(forge, sleeps) as client:
        assert client.publish(SHA, [status()]) == [status()]
    assert sleeps == [1.0]


def test_retry_after_may_be_an_http_date(start_forge: Callable[..., FakeForge], sleeps: Sleeps) -> None:
    forge = start_forge("gitlab")
    forge.answer_next(429, {"Retry-After": formatdate(NOW + 7, usegmt=True)})
    with client_for(forge, sleeps) as client:
        client.publish(SHA, [status()])
    assert sleeps == [7.0]


@pytest.mark.parametrize("code", [403, 429])
def test_github_exhausted_rate_limit_waits_until_the_reset(
        code: int, start_forge: Callable[..., FakeForge], sleeps: Sleeps) -> None:
    forge = start_forge("github")
    forge.answer_next(code, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 30)},
                      {"message": "API rate limit exceeded"})
    with client_for(forge, sleeps) as client:
        assert client.publish(SHA, [status()]) == [status()]
    assert sleeps == [30.0]


def test_server_errors_are_retried_with_growing_delays(forge: FakeForge, sleeps: Sleeps) -> None:
    forge.answer_next(502, times=2)
    with client_for(forge, sleeps) as client:
        assert client.publish(SHA, [status()]) == [status()]
    assert len(sleeps) == 2 and 1 <= sleeps[0] < 2 <= sleeps[1] < 3


def test_a_forge_that_stays_down_gives_transient_after_the_bound(forge: FakeForge, sleeps: Sleeps) -> None:
    forge.answer_next(503, times=10, body={"message": "upstream connect error"})
    with client_for(forge, sleeps) as client, pytest.raises(Transient) as caught:
        client.publish(SHA, [status()])
    assert caught.value.reason == "ForgeUnavailable"
    assert "HTTP 503: upstream connect error" in caught.value.message and "5 attempts" in caught.value.message
    assert len(forge.log) == 5 and len(sleeps) == 4


def test_a_wait_longer_than_max_wait_is_not_waited_for(forge: FakeForge, sleeps: Sleeps) -> None:
    forge.answer_next(429, {"Retry-After": "3600"})
    with client_for(forge, sleeps) as client, pytest.raises(Transient, match="ForgeUnavailable"):
        client.publish(SHA, [status()])
    assert sleeps == [] and len(forge.log) == 1


def test_an_unreachable_forge_is_transient(monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nothing listens there
    config = ForgeConfig(kind="github", api_url=f"http://127.0.0.1:{port}", allow_http=True, repository="o/r",
                         token_env=TOKEN_ENV)
    with ForgeStatuses(config, sleep=sleeps) as client, pytest.raises(Transient) as caught:
        client.publish(SHA, [status()])
    assert caught.value.reason == "ForgeUnavailable" and "ConnectError" in caught.value.message
    assert len(sleeps) == 4


@pytest.mark.parametrize(("kind", "setup", "code", "forge_says"), [
    ("github", lambda f: setattr(f, "token", "another"), 401, "Bad credentials"),
    ("gitea", lambda f: setattr(f, "token", "another"), 401, "user does not exist"),
    ("gitlab", lambda f: setattr(f, "token", "another"), 401, "401 Unauthorized"),
    ("github", lambda f: setattr(f, "repository", "fleet-org/elsewhere"), 404, "Not Found"),
    ("gitlab", lambda f: setattr(f, "repository", "fleet-org/elsewhere"), 404, "404 Project Not Found"),
    ("github", lambda f: f.answer_next(403, body={"message": "Resource not accessible by integration"}), 403,
     "Resource not accessible by integration"),
    ("github", lambda f: (setattr(f, "max_per_context", 1), f.seed(SHA, CTX, "pending", "old")), 422,
     "Validation Failed; This SHA and context has reached the maximum number of statuses."),
    ("gitlab", lambda f: f.answer_next(400, body={"message": {"target_url": ["is blocked"]}}), 400,
     '{"target_url": ["is blocked"]}'),
])
def test_refusals_stall_with_the_code_and_the_forges_message(
        kind: str, setup: Callable[[FakeForge], object], code: int, forge_says: str,
        start_forge: Callable[..., FakeForge], sleeps: Sleeps) -> None:
    forge = start_forge(kind)
    setup(forge)
    with client_for(forge, sleeps, repository="fleet-org/fleet") as client, pytest.raises(Stalled) as caught:
        client.publish(SHA, [status()])
    assert caught.value.reason == "ForgeRejected"
    assert f"HTTP {code}: {forge_says}" in caught.value.message
    assert sleeps == []


def test_a_next_page_link_off_the_api_origin_is_not_followed(
        start_forge: Callable[..., FakeForge], sleeps: Sleeps) -> None:
    forge = start_forge("github", max_page_size=1)
    forge.link_origin = "http://127.0.0.2:9"
    forge.seed(SHA, "ci/a", "success")
    forge.seed(SHA, "ci/b", "success")
    with client_for(forge, sleeps) as client, pytest.raises(Stalled, match="next-page link leaves the API"):
        client.publish(SHA, [status()])
    assert len(forge.log) == 1


def test_a_listing_that_is_not_a_list_is_transient(start_forge: Callable[..., FakeForge], sleeps: Sleeps) -> None:
    forge = start_forge("gitea")
    forge.answer_next(200, body={"html": "a login page of some proxy"})
    with client_for(forge, sleeps) as client, pytest.raises(Transient, match="did not answer with a list"):
        client.publish(SHA, [status()])


def test_a_short_or_foreign_commit_id_is_refused_before_any_request(forge: FakeForge, sleeps: Sleeps) -> None:
    with client_for(forge, sleeps) as client:
        for bad in ("abc123", SHA.upper(), "main", SHA + "/../x"):
            with pytest.raises(Stalled) as caught:
                client.publish(bad, [status()])
            assert caught.value.reason == "InvalidCommitId"
    assert forge.log == []


# --- the token stays secret ---------------------------------------------------------------------

def test_the_token_never_reaches_an_error_or_a_log(start_forge: Callable[..., FakeForge], sleeps: Sleeps,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG
    errors: list[ReconcilerError] = []
    for kind in ("github", "gitea", "gitlab"):
        forge = start_forge(kind)
        forge.answer_next(503, body={"message": f"proxy saw Authorization: token {TOKEN}"}, times=5)
        forge.answer_next(422, body={"message": "Validation Failed", "errors": [{"message": f"bad {TOKEN}"}]})
        forge.answer_next(429, {"Retry-After": "1"}, body=TOKEN)
        with client_for(forge, sleeps) as client:
            for _ in range(3):
                try:
                    client.publish(SHA, [status()])
                except ReconcilerError as error:
                    errors.append(error)
        forge.token = "rotated"
        with client_for(forge, sleeps) as client, pytest.raises(Stalled) as caught:
            client.publish(SHA, [status()])
        errors.append(caught.value)
    assert [e.reason for e in errors] == ["ForgeUnavailable", "ForgeRejected", "ForgeRejected"] * 3
    assert any("***" in e.message for e in errors)  # the forges' echoes were there, and were cut
    for error in errors:
        assert TOKEN not in str(error) and TOKEN not in repr(error)
        assert error.__cause__ is None
    assert caplog.records and all(TOKEN not in record.getMessage() for record in caplog.records)
    assert TOKEN not in caplog.text


def test_a_missing_token_stalls_and_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    config = ForgeConfig(kind="gitea", api_url="https://gitea.example/api/v1", repository="o/r", token_env=TOKEN_ENV)
    with pytest.raises(Stalled) as caught:
        ForgeStatuses(config)
    assert caught.value.reason == "ForgeTokenMissing" and TOKEN_ENV in caught.value.message


def test_a_token_pasted_as_the_variable_name_is_refused_without_repeating_it() -> None:
    with pytest.raises(ValidationError) as caught:
        ForgeConfig(kind="github", api_url="https://api.github.com", repository="o/r", token_env=TOKEN)
    assert all(TOKEN not in error["msg"] for error in caught.value.errors())


# --- configuration ------------------------------------------------------------------------------

GOOD = {"kind": "github", "apiUrl": "https://api.github.com", "repository": "acme/fleet", "tokenEnv": "GITHUB_TOKEN"}


@pytest.mark.parametrize(("change", "complaint"), [
    ({"kind": "bitbucket"}, "kind"),
    ({"apiUrl": "api.github.com"}, "http(s) URL"),
    ({"apiUrl": "https://bot:secret@api.github.com"}, "must not carry credentials"),
    ({"apiUrl": "https://api.github.com/?page=2"}, "query"),
    ({"apiUrl": "http://gitea.lan/api/v1"}, "allowHttp: true"),
    ({"repository": "fleet"}, "owner/repo"),
    ({"repository": "acme/fleet/extra"}, "owner/repo"),
    ({"kind": "gitea", "repository": "acme fleet/x"}, "owner/repo"),
    ({"kind": "gitlab", "repository": "group/"}, "GitLab project id or path"),
    ({"kind": "gitlab", "repository": ""}, "GitLab project id or path"),
    ({"tokenEnv": "github_token"}, "name of an environment variable"),
    ({"tokenEnv": "1TOKEN"}, "name of an environment variable"),
    ({"targetUrl": "https://dash.example/{site}/{model}"}, "not model"),
    ({"targetUrl": "https://dash.example/{site"}, "not a valid template"),
    ({"targetUrl": "dash/{site}"}, "http(s) URL template"),
    ({"timeout": 0}, "greater than 0"),
    ({"token": "ghp_x"}, "Extra inputs are not permitted"),
])
def test_bad_forge_settings_are_refused(change: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(complaint)):
        ForgeConfig.model_validate({**GOOD, **change})


@pytest.mark.parametrize("change", [
    {},
    {"apiUrl": "https://ghe.example/api/v3/"},
    {"kind": "gitlab", "repository": "42"},
    {"kind": "gitlab", "repository": "group/sub/project"},
    {"kind": "gitlab", "repository": "group%2Fproject"},
    {"kind": "forgejo", "repository": "acme/fleet.models", "targetUrl": "https://dash.example/{deployment}/{site}"},
])
def test_good_forge_settings_are_accepted(change: dict[str, object]) -> None:
    config = ForgeConfig.model_validate({**GOOD, **change})
    assert not config.api_url.endswith("/")


# --- what the statuses say ----------------------------------------------------------------------

def dstatus(state: State, version: str | None = "1.1.0", active: str | None = "1.0.0", previous: str | None = None,
            reason: str = "Converged", message: str = "", weights: dict[str, int] | None = None) -> DeploymentStatus:
    return DeploymentStatus(model="churn-model", state=state, version=version, activeVersion=active,
                            previousVersion=previous, reason=reason, message=message, weights=weights or {},
                            since=SINCE)


@pytest.mark.parametrize(("deployment", "expected"), [
    (dstatus("success", active="1.1.0", previous="1.0.0", reason="Activated"), "1.1.0 serving (was 1.0.0)"),
    (dstatus("success", active="1.1.0"), "1.1.0 serving"),
    (dstatus("pending", reason="WaitingForWave", message="wave 2 waits for wave 1"),
     "1.1.0 pending (serving 1.0.0): WaitingForWave: wave 2 waits for wave 1"),
    (dstatus("progressing", reason="Canary", weights={"1.0.0": 80, "1.1.0": 20}),
     "1.1.0 progressing at 20% (serving 1.0.0): Canary"),
    (dstatus("pending", active=None, reason="Downloading"), "1.1.0 pending: Downloading"),
    (dstatus("failure", reason="ArtifactDigestMismatch", message="models/churn.onnx is sha256:ab…"),
     "failure: ArtifactDigestMismatch on 1.1.0, serving 1.0.0: models/churn.onnx is sha256:ab…"),
    (dstatus("aborted", reason="RolloutAborted"), "aborted: RolloutAborted on 1.1.0, serving 1.0.0"),
    (dstatus("error", version=None, active=None, reason="ArtifactFetchFailed"),
     "error: ArtifactFetchFailed on no version, serving nothing"),
])
def test_deployment_descriptions(deployment: DeploymentStatus, expected: str) -> None:
    assert describe_deployment(deployment) == expected


def test_a_record_gives_one_status_per_deployment_with_its_link() -> None:
    record = StatusRecord(
        site="store-1", observedCommit=SHA, state="failure", reason="ValidationFailed", agentVersion="0.1.0",
        writtenAt=SINCE,
        deployments={"fraud": dstatus("failure", reason="ValidationFailed"),
                     "churn": dstatus("success", active="1.1.0", previous="1.0.0")},
    )
    template = "https://dash.example/{deployment}/{site}"
    assert statuses_for_record(record, template) == [
        CommitStatus(context="reconciler/churn/store-1", state="success",
                     description="1.1.0 serving (was 1.0.0) · state=success version=1.1.0 active=1.1.0",
                     target_url="https://dash.example/churn/store-1"),
        CommitStatus(context="reconciler/fraud/store-1", state="failure",
                     description="failure: ValidationFailed on 1.1.0, serving 1.0.0 · "
                                 "state=failure version=1.1.0 active=1.0.0",
                     target_url="https://dash.example/fraud/store-1"),
    ]
    assert statuses_for_record(record)[0].target_url is None


RID = "3f2a1c9e0b7d"
LONG_VERSION = "1.1.0-rc.1+" + "b" * 117  # the longest a manifest allows: 128 characters


@pytest.mark.parametrize(("deployment", "expected"), [
    (dstatus("success", active="1.1.0").model_copy(update={"rollout": RID, "wave": "early"}),
     "state=success rollout=3f2a1c9e0b7d version=1.1.0 active=1.1.0 wave=early"),
    (dstatus("pending", active=None).model_copy(update={"rollout": RID}), "state=pending rollout=3f2a1c9e0b7d version=1.1.0"),
    (dstatus("error", version=None, active=None), "state=error"),
    (dstatus("aborted").model_copy(update={"rollout": "not a token"}), "state=aborted version=1.1.0 active=1.0.0"),
])
def test_gate_pairs(deployment: DeploymentStatus, expected: str) -> None:
    assert gate_pairs(deployment) == expected


@pytest.mark.parametrize(("text", "human", "fields"), [
    ("1.1.0 serving · state=success rollout=3f2a1c9e0b7d", "1.1.0 serving", {"state": "success", "rollout": RID}),
    ("state=success", "", {"state": "success"}),
    ("x · state=failed · state=failure version=1.1.0+b_7", "x · state=failed",
     {"state": "failure", "version": "1.1.0+b_7"}),
    ("a: b · state=pending future=thing", "a: b", {"state": "pending", "future": "thing"}),  # newer keys pass
    ("1.1.0 serving", "1.1.0 serving", {}),
    ("a · state=success version=1 version=2", "a · state=success version=1 version=2", {}),  # a key twice
    ("a · state=success but more words", "a · state=success but more words", {}),
    ("a·state=success", "a·state=success", {}),
    ("a · rollout=3f2a1c9e0b7d state=success", "a · rollout=3f2a1c9e0b7d state=success", {}),  # state first
])
def test_split_description(text: str, human: str, fields: dict[str, str]) -> None:
    assert split_description(text) == (human, fields)


PAIRS = "state=progressing rollout=3f2a1c9e0b7d version=1.1.0 active=1.0.0 wave=early"


@pytest.mark.parametrize(("text", "limit", "expected"), [
    (f"1.1.0 progressing · {PAIRS}", 140, f"1.1.0 progressing · {PAIRS}"),
    (f"1.1.0 progressing at 20% (serving 1.0.0): Canary: step 1 · {PAIRS}", 100,
     f"1.1.0 progressing at… · {PAIRS}"),  # the human part is cut, the pairs are whole
    (f"1.1.0 progressing · {PAIRS}", len(PAIRS) + 4, PAIRS),  # no room for a word: no lone ellipsis
    (f"1.1.0 progressing · {PAIRS}", 60, "1.1.… · state=progressing rollout=3f2a1c9e0b7d version=1.1.0"),  # pairs drop
    (f"x · state=pending rollout={RID} version={LONG_VERSION}", 140, f"x · state=pending rollout={RID}"),
    (f"x · state=pending rollout={RID} version={LONG_VERSION}", 255,
     f"x · state=pending rollout={RID} version={LONG_VERSION}"),
    ("x · state=progressing", 10, "x"),  # not even the state fits: the human part alone, unreadable to gates
    ("no pairs " * 20, 20, "no pairs no pairs n…"),
])
def test_fit_description(text: str, limit: int, expected: str) -> None:
    assert fit_description(text, limit) == expected
    assert len(expected) <= limit


@pytest.mark.parametrize(("kind", "limit"), [("github", 140), ("gitea", 255), ("gitlab", 255)])
def test_a_long_record_keeps_its_pairs_on_every_forge(
        kind: str, limit: int, start_forge: Callable[..., FakeForge], sleeps: Sleeps) -> None:
    forge = start_forge(kind)
    failing = dstatus("failure", reason="ValidationFailed", message="output 0 differs from the expected value; " * 9)
    record = StatusRecord(site="store-1", observedCommit=SHA, state="failure", reason="ValidationFailed",
                          agentVersion="0.1.0", writtenAt=SINCE,
                          deployments={"churn": failing.model_copy(update={"rollout": RID, "wave": "early"})})
    with client_for(forge, sleeps) as client:
        [posted] = client.publish(SHA, statuses_for_record(record))
        assert client.publish(SHA, statuses_for_record(record)) == []  # what the forge shows is what we post
    human, fields = split_description(posted.description)
    assert len(posted.description) <= limit and human.endswith("…")
    assert fields == {"state": "failure", "rollout": RID, "version": "1.1.0", "active": "1.0.0", "wave": "early"}


def test_context_names() -> None:
    assert deployment_context("churn", "store-1") == "reconciler/churn/store-1"
    assert wave_context("churn", 2) == wave_context("churn", "2") == "reconciler/churn/wave-2"
    assert target_url("https://d.example/{site}?d={deployment}", "s1", "churn") == "https://d.example/s1?d=churn"
    assert target_url(None, "s1", "churn") is None


HEALTHY = dstatus("success", active="1.1.0")
OLD = dstatus("success", active="1.0.0")


@pytest.mark.parametrize(("records", "total", "version", "state", "description"), [
    ({f"s{i}": HEALTHY for i in range(12)}, 12, None, "success", "12/12 healthy"),
    ({f"s{i}": HEALTHY for i in range(12)}, 12, "1.1.0", "success", "1.1.0: 12/12 healthy"),
    ({"s1": HEALTHY, "s2": dstatus("progressing"), "s3": None}, 3, None, "pending", "1/3 healthy, 2 pending"),
    ({"s1": HEALTHY, "s2": HEALTHY}, 4, None, "pending", "2/4 healthy, 2 pending"),  # two never reported
    ({"s1": HEALTHY, "s2": OLD}, 2, "1.1.0", "pending", "1.1.0: 1/2 healthy, 1 pending"),
    ({"s1": HEALTHY, "s2": dstatus("failure"), "s3": dstatus("pending")}, 3, None, "failure",
     "1/3 healthy, 1 failed, 1 pending"),
    ({"s1": dstatus("aborted"), "s2": dstatus("error")}, 2, None, "failure", "0/2 healthy, 2 failed"),
    ({}, 0, None, "success", "0/0 healthy"),
])
def test_wave_status(records: dict[str, DeploymentStatus | None], total: int, version: str | None,
                     state: State, description: str) -> None:
    combined = wave_status("churn", 1, records, total, version=version, target_url="https://dash.example/churn")
    assert combined == CommitStatus(context="reconciler/churn/wave-1", state=state, description=description,
                                    target_url="https://dash.example/churn")


def test_wave_status_refuses_more_records_than_sites() -> None:
    with pytest.raises(ValueError, match="3 site records but only 2 sites"):
        wave_status("churn", 1, {"a": HEALTHY, "b": HEALTHY, "c": HEALTHY}, 2)
