"""Execution providers per site: site.yaml's ``executionProviders`` as validated settings, and the
choice among what this onnxruntime has (runtime/providers.py), which validation and serving share."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reconciler.errors import Stalled
from reconciler.runtime.providers import CPU, ProviderChoice, choose
from reconciler.settings import SiteConfig

CUDA, TENSORRT, OPENVINO = "CUDAExecutionProvider", "TensorrtExecutionProvider", "OpenVINOExecutionProvider"


@pytest.mark.parametrize(("wanted", "available", "use", "skipped"), [
    ([CPU], [CPU], (CPU,), ()),
    ([CUDA, CPU], [CPU], (CPU,), (CUDA,)),  # no GPU on this box: served on the CPU, and said
    ([CUDA, CPU], [CUDA, CPU], (CUDA, CPU), ()),
    ([CPU, CUDA], [CUDA, CPU], (CPU, CUDA), ()),  # the site's order, not onnxruntime's
    ([TENSORRT, CUDA, CPU], [CUDA, CPU], (CUDA, CPU), (TENSORRT,)),
])
def test_the_wanted_providers_this_onnxruntime_has_in_the_sites_order(
        wanted: list[str], available: list[str], use: tuple, skipped: tuple) -> None:
    assert choose(wanted, available) == ProviderChoice(use, skipped, tuple(available))


@pytest.mark.parametrize("wanted", [[CUDA], [OPENVINO, TENSORRT]])
def test_none_of_the_wanted_providers_available_is_refused_saying_what_to_do(wanted: list[str]) -> None:
    with pytest.raises(Stalled) as refused:
        choose(wanted, [CPU])
    assert refused.value.reason == "NoExecutionProvider"
    assert f"({', '.join(wanted)}) is available" in refused.value.message
    assert f"it has {CPU}" in refused.value.message and "add CPUExecutionProvider" in refused.value.message


def test_a_choice_that_skipped_one_explains_it() -> None:
    assert ProviderChoice((CPU,), (), (CPU,)).explain() == f"execution providers: {CPU}"
    assert ProviderChoice((CPU,), (CUDA,), (OPENVINO, CPU)).explain() == (
        f"execution providers {CUDA} are not available in this onnxruntime (it has {OPENVINO}, {CPU}); using {CPU}")


def config(**settings: object) -> SiteConfig:
    return SiteConfig.model_validate({"site": "s", "repo": "r", "state": "/s", **settings})


def test_a_site_asks_for_its_providers_in_order_and_cpu_by_default() -> None:
    assert config().execution_providers == [CPU]
    assert config(executionProviders=[CUDA, CPU]).execution_providers == [CUDA, CPU]


@pytest.mark.parametrize(("providers", "message"), [
    ([], "at least 1 item"),
    (["CUDA"], "should match pattern"),  # onnxruntime's names end in ExecutionProvider
    ([CUDA, CPU, CUDA], "names CUDAExecutionProvider more than once"),
])
def test_a_bad_provider_list_is_refused(providers: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(executionProviders=providers)
