"""Typed errors. Each carries a stable ``reason`` (CamelCase, part of the status contract: every
reason is a constant of ``reconciler.reasons``) and says by its class what happens next; the tree
of classes and next steps is drawn in ``reconciler.reasons``. Where an error came from is in the
message (``add_context`` prefixes it on the way up)."""

from __future__ import annotations

from reconciler.reasons import Next


class ReconcilerError(Exception):
    """Base of every error the agent reports. ``retry`` says whether trying again may help."""

    retry: bool = False
    next: Next = Next.WAIT_FOR_CHANGE

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

    def add_context(self, context: str) -> ReconcilerError:
        """The same error said where it was met (``context: message``): a copy, keeping its class
        and everything a subclass carries, so an error raised twice (a cached refusal) is never
        prefixed twice."""
        said = type(self).__new__(type(self))
        said.__dict__.update(self.__dict__)
        said.message = f"{context}: {self.message}"
        said.args = (said.message,)
        return said


class Transient(ReconcilerError):
    """The world may fix this by itself (server down, timeout, lock held): retried at the next
    tick, with backoff."""

    retry = True
    next = Next.RETRY_NEXT_TICK


class Interrupted(Transient):
    """A transfer broke off (no answer, a 5xx, a cut connection): tried again at once within the
    same ingest, with backoff and under its deadline; after the last attempt, at the next tick.
    ``retry_after``: the seconds the server asked to be left alone (its ``Retry-After``)."""

    next = Next.RETRY_NOW

    def __init__(self, reason: str, message: str, retry_after: float | None = None):
        super().__init__(reason, message)
        self.retry_after = retry_after


class Stalled(ReconcilerError):
    """Retrying the same inputs gives the same answer (bad manifest, bad signature, tampered
    artifact, failing validation): wait for the inputs to change."""

    retry = False
    next = Next.WAIT_FOR_CHANGE


class NeedsOperator(Stalled):
    """Nothing in Git fixes this and the agent cannot go on (no --listen for a running canary, a
    listen address it cannot bind, a state directory it cannot use): it writes its status and
    exits, and the CLI exits 2 with the message."""

    next = Next.NEEDS_OPERATOR


class UsageError(Exception):
    """Bad command-line use or local environment; the CLI exits 2."""


class Cancelled(Transient):
    """The agent was asked to stop (SIGTERM, Ctrl-C) while this work was in flight. Nothing was
    activated; a download keeps its part file and the next start resumes it. Reason: AgentStopping."""
