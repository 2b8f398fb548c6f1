"""The site's inventory: the pure parsers of key=value facts and of /proc, the cache that collects
at the first record and then rarely, and the agent putting it (and the execution provider serving
each deployment) into its records. Real executables and a real agent: tests/integration/test_inventory.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.agent import inventory
from reconciler.agent.inventory import (
    MAX_LOCAL_FACTS,
    InventoryCache,
    cpu_model,
    merge_local,
    parse_facts,
)
from reconciler.devtools.fakes import FakeSite, fake_site, fleet_files
from reconciler.status.record import SiteInventory, StatusRecord

T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def facts(**changes: object) -> SiteInventory:
    base = {"os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0", "arch": "x86_64", "cpus": 2,
            "onnxruntime": "1.20.0", "executionProviders": ["CPUExecutionProvider"], "collectedAt": T0}
    return SiteInventory.model_validate({**base, **changes})


@pytest.mark.parametrize(("text", "kept", "refused"), [
    ("gpu=jetson-orin\nrack=b2\n", {"gpu": "jetson-orin", "rack": "b2"}, []),
    ("\n  \nos.build=2026.11\n", {"os.build": "2026.11"}, []),  # blank lines are no facts and no errors
    ("a=b=c\n", {"a": "b=c"}, []),  # the first '=' splits
    ("empty=\n", {"empty": ""}, []),
    ("no equals sign\nok=1\n", {"ok": "1"}, ["probe line 1: not key=value"]),
    ("=value\n", {}, ["probe line 1: key '' is not 1-64 letters, digits, '_', '.', '-'"]),
    ("bad key=1\n", {}, ["probe line 1: key 'bad key' is not 1-64 letters, digits, '_', '.', '-'"]),
    ("k=\x1b[31mred\n", {}, ["probe line 1: value of k is longer than 256 characters or not printable"]),
    (f"k={'x' * 257}\n", {}, ["probe line 1: value of k is longer than 256 characters or not printable"]),
    ("k=1\nk=2\n", {"k": "1"}, ["probe line 2: k given twice, the first kept"]),
])
def test_key_value_lines_are_kept_or_refused_one_by_one(text: str, kept: dict, refused: list) -> None:
    assert parse_facts("probe", text) == (kept, refused)


def test_facts_of_several_executables_merge_first_come_and_stay_few() -> None:
    many = {f"k{i}": "v" for i in range(MAX_LOCAL_FACTS + 1)}
    merged, refused = merge_local([("10-a", {"rack": "b2"}), ("20-b", {"rack": "c3", **many})])
    assert merged["rack"] == "b2" and len(merged) == MAX_LOCAL_FACTS
    assert refused[0] == "20-b: rack already given by another executable, the first kept"
    assert refused[1:] == [f"20-b: k{i} refused, more than {MAX_LOCAL_FACTS} facts in all"
                           for i in range(MAX_LOCAL_FACTS - 1, MAX_LOCAL_FACTS + 1)]


@pytest.mark.parametrize(("cpuinfo", "model"), [
    ("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n", "AMD EPYC 7B13"),
    ("processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t: Raspberry Pi 4 Model B Rev 1.4\n",
     "Raspberry Pi 4 Model B Rev 1.4"),
    ("processor\t: 0\nHardware\t: Jetson\n", "Jetson"),
    ("processor\t: 0\n", None),
    ("", None),
])
def test_the_cpu_model_is_read_from_cpuinfo_on_x86_and_arm(cpuinfo: str, model: str | None) -> None:
    assert cpu_model(cpuinfo) == model


class Collector:
    """collect() as the cache calls it: what it returns next, and how often it was asked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.next = facts()
        monkeypatch.setattr(inventory, "collect", self)

    def __call__(self, state, inventory_dir, now: datetime) -> SiteInventory:
        self.calls += 1
        if isinstance(self.next, Exception):
            raise self.next
        return self.next.model_copy(update={"collectedAt": now})


def test_the_cache_collects_at_the_first_record_then_once_an_hour(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    collector = Collector(monkeypatch)
    cache = InventoryCache(tmp_path, None)
    first = cache(T0)
    assert cache(T0 + timedelta(minutes=59)) is first and collector.calls == 1
    collector.next = facts(diskFreeMiB=100)
    assert cache(T0 + timedelta(hours=1)).diskFreeMiB == 100 and collector.calls == 2


def test_a_refresh_that_finds_the_same_facts_keeps_the_earlier_ones(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    Collector(monkeypatch)
    cache = InventoryCache(tmp_path, None)
    first = cache(T0)
    assert cache(T0 + timedelta(hours=2)) is first  # same facts: the record stays the same, no new commit


def test_a_collection_that_fails_keeps_what_was_known(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    collector = Collector(monkeypatch)
    cache = InventoryCache(tmp_path, None)
    first = cache(T0)
    collector.next = OSError("no /proc")
    assert cache(T0 + timedelta(hours=1)) is first
    assert InventoryCache(tmp_path, None)(T0) is None  # nothing known yet: the record has no inventory


def first_record(site: FakeSite) -> StatusRecord:
    site.source.commit(fleet_files("1.0.0"))
    site.agent.start()
    try:
        return site.agent.reconcile_once().record
    finally:
        site.agent.stop()


def test_the_record_carries_the_inventory_and_the_provider_serving_each_deployment(tmp_path) -> None:
    site = fake_site(tmp_path / "state", lambda: T0)
    site.agent.inventory = lambda now: facts(collectedAt=now)
    record = first_record(site)
    assert record.inventory == facts()
    assert record.deployments["d"].executionProvider == "CPUExecutionProvider"


def test_a_site_without_serving_names_no_provider(tmp_path) -> None:
    record = first_record(fake_site(tmp_path / "state", lambda: T0, runtime=False))
    assert record.deployments["d"].executionProvider is None and record.inventory is None
