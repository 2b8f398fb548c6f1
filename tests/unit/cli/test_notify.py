"""`reconciler notify` refuses what it cannot announce before it connects to anything: a commit
that is not a full id, a server that is not nats:// or tls://, a token pasted as its variable;
and a server out of reach fails within its timeout."""

from __future__ import annotations

import pytest

from reconciler.cli.main import main


@pytest.mark.parametrize(("arguments", "said"), [
    (["--commit", "HEAD"], "--commit must be a full commit id (40 or 64 hex digits), not 'HEAD'"),
    (["--commit", "abc123"], "--commit must be a full commit id"),
    (["--commit", "a" * 40, "--server", "http://127.0.0.1:4222"], "servers: 'http://127.0.0.1:4222': a server is"),
    (["--commit", "a" * 40, "--token-env", "s3cr3t"], "tokenEnv must be the name of an environment variable"),
    (["--commit", "a" * 40, "--fleet-bucket", "a.b"], "a bucket or domain name is letters"),
])
def test_what_cannot_be_announced_is_refused(arguments, said, capsys):
    if "--server" not in arguments:
        arguments = [*arguments, "--server", "nats://127.0.0.1:1"]
    assert main(["notify", *arguments]) == 2
    assert said in capsys.readouterr().err


def test_a_server_out_of_reach_is_a_transient_failure_not_a_hang(capsys):
    from reconciler.devtools.processes import free_port

    port = free_port()
    assert main(["notify", "--commit", "b" * 40, "--server", f"nats://127.0.0.1:{port}", "--timeout", "0.5"]) == 1
    assert "StatusChannelUnreachable" in capsys.readouterr().err
