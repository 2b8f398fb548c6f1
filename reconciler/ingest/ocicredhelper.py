"""Credentials from docker's credential helpers (``credHelpers`` per registry, ``credsStore`` for
all), by the docker-credential-helpers protocol: ``docker-credential-<name> get`` with the server
on stdin answers ``{"ServerURL", "Username", "Secret"}`` on stdout, or exits non-zero saying
``credentials not found in native keychain`` when it has none. A ``Username`` of ``<token>``
makes ``Secret`` an identity token (an OAuth2 refresh token for the registry's token service).

The helper is a program the site's operator installed: it runs with the agent's environment, for
at most ``HELPER_SECONDS`` and ``HELPER_MAX_BYTES`` of answer, and is killed past either."""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from reconciler import reasons
from reconciler.errors import Stalled, Transient

__all__ = ["HELPER_MAX_BYTES", "HELPER_SECONDS", "IDENTITY_TOKEN_USER", "HelperAnswer", "helper_credentials"]

HELPER_SECONDS = 10.0
HELPER_MAX_BYTES = 64 << 10
IDENTITY_TOKEN_USER = "<token>"
NOT_FOUND = b"credentials not found"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class HelperAnswer:
    username: str
    secret: str

    @property
    def identity_token(self) -> bool:
        return self.username == IDENTITY_TOKEN_USER


def helper_credentials(helper: str, server: str, where: str) -> HelperAnswer | None:
    """What ``docker-credential-<helper>`` holds for ``server``, or None when it holds nothing.
    ``where`` names the setting that chose the helper, for messages."""
    program = _program(helper, where)
    status, output = _run(program, server.encode(), f"{where}: docker-credential-{helper}")
    if status != 0:
        if NOT_FOUND in output:
            return None
        first_line = output.decode(errors="replace").strip().splitlines()[:1]
        raise Transient(reasons.OciCredentialHelperFailed,
                        f"{where}: `docker-credential-{helper} get` for {server} exited with {status}: "
                        f"{first_line[0] if first_line else 'no message'}")
    return _parse(output, f"{where}: docker-credential-{helper}")


def _program(helper: str, where: str) -> str:
    if not _NAME.fullmatch(helper):
        raise Stalled(reasons.OciCredentialHelperMissing,
                      f"{where}: {helper!r} is not a credential helper name (letters, digits, '.', '_', '-')")
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        raise Stalled(reasons.OciCredentialHelperMissing, f"{where}: docker-credential-{helper} is not on PATH")
    return program


def _run(program: str, stdin: bytes, who: str) -> tuple[int, bytes]:
    """The helper's exit status and its stdout and stderr together, bounded in time and size."""
    process = subprocess.Popen([program, "get"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    assert process.stdin is not None and process.stdout is not None
    answered = False
    try:
        try:
            process.stdin.write(stdin)
            process.stdin.close()
        except BrokenPipeError:
            pass  # a helper that does not read its stdin still answers (or fails) on its own
        until = time.monotonic() + HELPER_SECONDS
        output = _read_bounded(process, who, until)
        status = process.wait(max(0.1, until - time.monotonic()))
        answered = True
        return status, output
    except subprocess.TimeoutExpired:
        raise Transient(reasons.OciCredentialHelperFailed, f"{who} did not exit within {HELPER_SECONDS:g} s") from None
    finally:
        if not answered:
            # Its own session: whatever it started that still holds the pipe goes with it. The
            # group outlives a leader that exited, so its id names no one else yet.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()


def _read_bounded(process: subprocess.Popen, who: str, until: float) -> bytes:
    assert process.stdout is not None
    chunks: list[bytes] = []
    size = 0
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            left = until - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise Transient(reasons.OciCredentialHelperFailed, f"{who} did not answer within {HELPER_SECONDS:g} s")
            chunk = os.read(process.stdout.fileno(), 8192)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > HELPER_MAX_BYTES:
                raise Transient(reasons.OciCredentialHelperFailed, f"{who} answered more than {HELPER_MAX_BYTES} bytes")
            chunks.append(chunk)


def _parse(output: bytes, who: str) -> HelperAnswer:
    try:
        document = json.loads(output)
        username, secret = document["Username"], document["Secret"]
    except (ValueError, KeyError, TypeError):
        raise Transient(reasons.OciCredentialHelperFailed,
                        f"{who} answered what is not its JSON ({{\"Username\", \"Secret\"}})") from None
    if not isinstance(username, str) or not isinstance(secret, str) or not secret \
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in username + secret):
        raise Transient(reasons.OciCredentialHelperFailed, f"{who} answered a Username or Secret that is not usable text")
    return HelperAnswer(username, secret)
