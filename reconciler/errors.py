"""Typed errors. Each carries a stable ``reason`` (CamelCase, part of the status contract) and
says what happens next: a Transient error is retried with backoff, a Stalled one waits for a human
(a new commit, a new key, an operator's decision). Where an error came from is in the message."""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error the agent reports. ``retry`` says whether trying again may help."""

    retry: bool = False

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class Transient(ReconcilerError):
    """The world may fix this by itself (server down, timeout, lock held): retry with backoff."""

    retry = True


class Stalled(ReconcilerError):
    """Retrying the same inputs gives the same answer (bad manifest, bad signature, tampered
    artifact, failing validation): wait for the inputs to change."""

    retry = False


class UsageError(Exception):
    """Bad command-line use or local environment; the CLI exits 2."""


class Cancelled(Transient):
    """The agent was asked to stop (SIGTERM, Ctrl-C) while this work was in flight. Nothing was
    activated; a download keeps its part file and the next start resumes it. Reason: AgentStopping."""
