"""Which onnxruntime execution providers a site's sessions use: the ones its site.yaml asks for
(``executionProviders``, most wanted first) that this box's onnxruntime has. Validation children
and serving sessions get the same list, so a model is validated on the accelerator that will serve
it. A wanted provider the box lacks is skipped and said, never silently: a GPU box whose driver
broke keeps serving on the CPU, and its status record says which provider serves each deployment.
None of them available refuses, rather than serving on something nobody asked for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler import reasons
from reconciler.errors import Stalled

log = logging.getLogger("reconciler.runtime")

CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class ProviderChoice:
    use: tuple[str, ...]  # what sessions are created with, in the site's order
    skipped: tuple[str, ...] = ()  # asked for, but not in this onnxruntime
    available: tuple[str, ...] = ()  # what this onnxruntime has

    def explain(self) -> str:
        if not self.skipped:
            return f"execution providers: {', '.join(self.use)}"
        return (f"execution providers {', '.join(self.skipped)} are not available in this onnxruntime "
                f"(it has {', '.join(self.available)}); using {', '.join(self.use)}")


def choose(wanted: Sequence[str], available: Sequence[str]) -> ProviderChoice:
    """The wanted providers that are available, in the wanted order; Stalled when none is."""
    use = tuple(name for name in wanted if name in available)
    if not use:
        raise no_provider(wanted, available)
    return ProviderChoice(use, tuple(name for name in wanted if name not in available), tuple(available))


def no_provider(wanted: Sequence[str], available: Sequence[str]) -> Stalled:
    return Stalled(reasons.NoExecutionProvider,
                   f"none of the execution providers this site asks for ({', '.join(wanted)}) is available "
                   f"in this onnxruntime (it has {', '.join(available)}); add {CPU} to executionProviders "
                   f"or install the onnxruntime build for the accelerator")


def available_providers() -> list[str]:
    import onnxruntime  # here, not at the top: the agent process asks only when it validates or serves

    return list(onnxruntime.get_available_providers())


def choose_here(wanted: Sequence[str]) -> ProviderChoice:
    """``choose`` against this process's onnxruntime, the skipped ones logged once, as a warning."""
    choice = choose(wanted, available_providers())
    if choice.skipped:
        log.warning(choice.explain(), extra={"reason": reasons.ExecutionProviderUnavailable})
    return choice
