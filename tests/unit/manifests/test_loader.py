from __future__ import annotations

import gc
import pickle
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import time
from pathlib import Path

import pytest
import yaml
from manifest_texts import DEPLOYMENT, DIGEST_A, FLEET, GOOD_REPO, SITES, edit, load, repo_files

from reconciler.devtools.testing import write_tree
from reconciler.manifests.fleet import Origin
from reconciler.manifests.loader import DocumentCache, RepoFile, load_directory, load_tree
from reconciler.manifests.yamlreader import YamlLoader


def test_the_good_repo_loads_into_a_fleet_repo() -> None:
    result = load()
    repo = result.repo
    assert result.findings == []
    assert (result.files, result.documents) == (5, 6)
    assert repo.fleet is not None and repo.fleet.metadata.name == "demo"
    assert sorted(repo.sites) == ["store-1", "store-2"]
    assert repo.models["m"].spec.version("1.1.0") is not None
    assert repo.deployments["d"].spec.model == "m"
    assert sorted(repo.flags.flags) == ["d-enabled", "d-version"]
    assert repo.origins[("Site", "store-1")] == Origin("sites/stores.yaml", 2)
    assert repo.origins[("Site", "store-2")] == Origin("sites/stores.yaml", 11)
    assert repo.origins[("Deployment", "d")] == Origin("deployments/d.yaml", 1)
    # `start: 12:30` is base-60 number 750 in YAML 1.1; here it is the clock time it reads as.
    assert repo.sites["store-1"].spec.maintenanceWindows[0].start == time(12, 30)


@pytest.mark.parametrize(
    ("yaml_value", "expected"),
    [
        ("yes", "yes"),  # a boolean in YAML 1.1
        ("2024-05-01", "2024-05-01"),  # a timestamp in YAML 1.1
        ('"true"', "true"),
    ],
)
def test_scalars_that_look_special_in_yaml_1_1_stay_strings(yaml_value: str, expected: str) -> None:
    sites = SITES.replace("region: us,", f"region: us, note: {yaml_value},")
    result = load({"sites/stores.yaml": sites})
    assert result.findings == []
    assert result.repo.sites["store-2"].metadata.labels["note"] == expected


def test_empty_documents_are_skipped_and_merge_keys_may_override() -> None:
    text = (
        "---\n---\n# nothing\n---\n"
        "apiVersion: reconciler/v1\nkind: Site\nmetadata:\n"
        "  <<: {name: store-9, labels: {tier: store}}\n"
        "  name: store-3\n"
    )
    result = load({"sites/more.yaml": text})
    assert result.findings == []
    assert result.documents == 7
    assert result.repo.sites["store-3"].metadata.labels == {"tier": "store"}
    assert result.repo.origins[("Site", "store-3")] == Origin("sites/more.yaml", 5)


def test_hidden_paths_and_other_files_are_not_read() -> None:
    reads: list[str] = []
    files = {**GOOD_REPO, ".github/workflows/ci.yml": "on: [push]\n", "a/.hidden/x.yaml": "kind: Foo\n",
             ".pre-commit-config.yaml": "repos: []\n", "models/m/notes.txt": "hi\n"}
    result = load_tree(repo_files(files, reads))
    assert result.findings == []
    assert sorted(reads) == ["deployments/d.yaml", "flags/fleet.flagd.json", "fleet.yaml", "models/m.yaml",
                             "sites/stores.yaml"]


BAD_INPUTS = [
    # id, overrides, path, line, col, message substring
    ("malformed-yaml", edit("deployments/d.yaml", "  model: m", "\tmodel: m"),
     "deployments/d.yaml", 6, 1, "malformed YAML: found character that cannot start any token"),
    ("bad-digest", edit("models/m.yaml", DIGEST_A, "sha256:abc"), "models/m.yaml", 13, 19,
     "spec.versions[0].artifacts[0].digest: should be 'sha256:' followed by 64 lowercase hex digits (got 'sha256:abc')"),
    ("missing-field", edit("models/m.yaml", "          size: 120\n", ""), "models/m.yaml", 12, 11,
     "spec.versions[0].artifacts[0].size: required field is missing"),
    ("extra-field", edit("models/m.yaml", "size: 120", "size: 120\n          sigature: x"), "models/m.yaml", 15, 11,
     "spec.versions[0].artifacts[0].sigature: unknown field (did you mean 'signature'?)"),
    ("extra-field-no-close-match", edit("deployments/d.yaml", "  model: m", "  model: m\n  zzz: 1"),
     "deployments/d.yaml", 7, 3,
     "spec.zzz: unknown field (allowed: model, version, enabled, targets, rollout, canary, rollbackWindow, batch, "
     "serve, maxBatchSize, maxQueueDelay)"),
    ("batch-size-zero", edit("deployments/d.yaml", "  model: m", "  model: m\n  maxBatchSize: 0"),
     "deployments/d.yaml", 7, 17, "spec.maxBatchSize: should be greater than or equal to 1 (got 0)"),
    ("batch-size-not-an-integer", edit("deployments/d.yaml", "  model: m", "  model: m\n  maxBatchSize: true"),
     "deployments/d.yaml", 7, 17, "spec.maxBatchSize: should be an integer (got true)"),
    ("queue-delay-without-batch-size", edit("deployments/d.yaml", "  model: m", "  model: m\n  maxQueueDelay: 2ms"),
     "deployments/d.yaml", 6, 3, "maxQueueDelay needs maxBatchSize: without it requests are not batched"),
    ("queue-delay-too-long", edit("deployments/d.yaml", "  model: m", "  model: m\n  maxBatchSize: 8\n  maxQueueDelay: 2s"),
     "deployments/d.yaml", 6, 3, "maxQueueDelay is at most 1000ms"),
    ("batch-only-without-batch", edit("deployments/d.yaml", "  model: m", "  model: m\n  serve: false"),
     "deployments/d.yaml", 7, 10, "spec.serve: serve: false needs a batch section: the deployment would run nowhere"),
    ("wrong-type", edit("models/m.yaml", "size: 120", "size: big"), "models/m.yaml", 14, 17,
     "spec.versions[0].artifacts[0].size: should be an integer (got 'big')"),
    ("too-small", edit("models/m.yaml", "size: 120", "size: 0"), "models/m.yaml", 14, 17,
     "size: should be greater than 0 (got 0)"),
    ("unquoted-float-version", edit("deployments/d.yaml", "version: 1.0.0", "version: 1.0"),
     "deployments/d.yaml", 7, 12, "spec.version: should be a string or a mapping (got 1.0); quote it"),
    ("flag-ref-typo", edit("deployments/d.yaml", "{flag: d-enabled}", "{flg: d-enabled}"),
     "deployments/d.yaml", 8, 13, "spec.enabled.flg: unknown field (did you mean 'flag'?)"),
    ("bad-name", edit("deployments/d.yaml", "name: d", "name: D_1"), "deployments/d.yaml", 4, 9,
     "metadata.name: should be a DNS label"),
    ("bad-enum", edit("models/m.yaml", "dtype: float32, shape: [-1, 2]", "dtype: float33, shape: [-1, 2]"),
     "models/m.yaml", 7, 31, "spec.interface.inputs[0].dtype: should be 'float32', 'float64'"),
    ("model-rule", edit("deployments/d.yaml", "        percent: 50\n", ""), "deployments/d.yaml", 15, 9,
     "spec.rollout.waves[1]: a wave has exactly one of 'percent' or 'selector'"),
    ("bad-timezone", edit("sites/stores.yaml", "Europe/Berlin", "Mars/Olympus"), "sites/stores.yaml", 9, 64,
     "timezone: 'Mars/Olympus' is not an IANA time zone"),
    ("unknown-kind", edit("deployments/d.yaml", "kind: Deployment", "kind: Deploymnet"), "deployments/d.yaml", 2, 7,
     "unknown kind 'Deploymnet' (known: Deployment, Fleet, Model, Site)"),
    ("unknown-api-version", edit("deployments/d.yaml", "reconciler/v1", "reconciler/v2"), "deployments/d.yaml", 1, 13,
     "unsupported apiVersion 'reconciler/v2' (expected reconciler/v1)"),
    ("missing-api-version", edit("deployments/d.yaml", "apiVersion: reconciler/v1\n", ""), "deployments/d.yaml", 1, 1,
     "apiVersion: missing"),
    ("tagged-value-not-an-int", edit("models/m.yaml", "size: 120", "size: !!int 12x"), "models/m.yaml", 14, 17,
     "malformed YAML: '12x' is not a valid int"),
    ("tagged-value-not-a-timestamp", edit("models/m.yaml", "size: 120", "size: !!timestamp soon"), "models/m.yaml",
     14, 17, "malformed YAML: 'soon' is not a valid timestamp"),
    ("not-a-mapping", {"extra.yaml": "- a\n- list\n"}, "extra.yaml", 1, 1, "a document is a mapping"),
    ("not-utf8", {"extra.yaml": b"kind: \xff\n"}, "extra.yaml", 1, 1, "not UTF-8 text"),
    ("duplicate-key", edit("deployments/d.yaml", "  model: m\n", "  model: m\n  model: n\n"), "deployments/d.yaml", 7, 3,
     "duplicate key 'model' (first at line 6)"),
    # Issue 10: a second definition is reported at its metadata.name, no longer at the document's line:1.
    ("duplicate-name-across-files", {"deployments/e.yaml": DEPLOYMENT}, "deployments/e.yaml", 4, 9,
     "Deployment 'd' is already defined at deployments/d.yaml:1"),
    ("duplicate-name-in-one-file", edit("sites/stores.yaml", "name: store-2", "name: store-1"), "sites/stores.yaml", 14, 9,
     "Site 'store-1' is already defined at sites/stores.yaml:2"),
    ("second-fleet", {"fleet2.yaml": FLEET.replace("name: demo", "name: other")}, "fleet2.yaml", 4, 9,
     "a repo has one Fleet; another is defined at fleet.yaml:1"),
    ("json-syntax", edit("flags/fleet.flagd.json", '"stable"}\n', '"stable"},\n'), "flags/fleet.flagd.json", 5, 3,
     "malformed JSON: Expecting property name enclosed in double quotes"),
    ("default-variant-not-a-variant", edit("flags/fleet.flagd.json", '"defaultVariant": "on"', '"defaultVariant": "maybe"'),
     "flags/fleet.flagd.json", 3, 18, "flags.d-enabled: defaultVariant 'maybe' is not one of the variants"),
    ("bad-flag-state", edit("flags/fleet.flagd.json", '"ENABLED", "variants": {"on"', '"ON", "variants": {"on"'),
     "flags/fleet.flagd.json", 3, 28, "flags.d-enabled.state: should be 'ENABLED' or 'DISABLED' (got 'ON')"),
    ("bad-flag-key", {"flags/x.flagd.json": '{"flags": {"no spaces": {"state": "ENABLED", "variants": {"a": 1}}}}'},
     "flags/x.flagd.json", 1, 12, 'flags["no spaces"]: should be a flag key'),
    ("duplicate-flag-key", {"flags/more.flagd.json": '{"flags": {"d-enabled": {"state": "DISABLED", "variants": {"on": true}}}}'},
     "flags/more.flagd.json", 1, 12, "flags.d-enabled: 'd-enabled' is already defined at flags/fleet.flagd.json:3"),
]


@pytest.mark.parametrize(("overrides", "path", "line", "col", "message"),
                         [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_refused_with_file_line_and_field(overrides, path, line, col, message) -> None:
    result = load(overrides)
    rendered = [f.render() for f in result.findings]
    assert any(
        (f.path, f.line, f.col, f.severity) == (path, line, col, "error") and message in f.message
        for f in result.findings
    ), rendered
    assert {f.path for f in result.errors} == {path}, rendered


def test_an_invalid_document_is_left_out_but_its_file_neighbours_stay() -> None:
    result = load(edit("sites/stores.yaml", "name: store-1", "name: Store_1"))
    assert sorted(result.repo.sites) == ["store-2"]
    assert len(result.errors) == 1


def test_a_flag_defined_twice_keeps_the_first_definition() -> None:
    more = '{"flags": {"d-enabled": {"state": "DISABLED", "variants": {"on": true}}}}'
    result = load({"flags/more.flagd.json": more})
    assert result.repo.flags.flags["d-enabled"].state == "ENABLED"


def test_unchanged_files_are_not_read_again() -> None:
    cache, reads = DocumentCache(), []
    files = repo_files(GOOD_REPO, reads)
    first = load_tree(files, cache)
    assert len(reads) == 5
    reads.clear()
    second = load_tree(repo_files(GOOD_REPO, reads), cache)
    assert reads == []
    assert second.repo.deployments == first.repo.deployments
    changed = {**GOOD_REPO, **edit("deployments/d.yaml", "version: 1.0.0", "version: 1.1.0")}
    third = load_tree(repo_files(changed, reads), cache)
    assert reads == ["deployments/d.yaml"]
    assert third.repo.deployments["d"].spec.version == "1.1.0"


def test_findings_of_cached_files_are_reported_on_every_load() -> None:
    cache = DocumentCache()
    bad = edit("models/m.yaml", DIGEST_A, "sha256:abc")
    first = load(bad, cache)
    second = load(bad, cache)
    assert first.findings == second.findings and len(second.errors) == 1
    assert cache.misses == 5


def test_the_cache_forgets_files_the_latest_load_did_not_use() -> None:
    cache, reads = DocumentCache(), []
    load_tree(repo_files(GOOD_REPO, reads), cache)
    without_model = {p: c for p, c in GOOD_REPO.items() if p != "models/m.yaml"}
    load_tree(repo_files(without_model, reads), cache)
    load_tree(repo_files(without_model, reads), cache)
    reads.clear()
    load_tree(repo_files(GOOD_REPO, reads), cache)
    assert reads == ["models/m.yaml"]


def test_load_directory_walks_a_working_tree(tmp_path: Path) -> None:
    write_tree(tmp_path, {**GOOD_REPO, ".git/config.yaml": "junk: [", ".github/workflows/ci.yml": "on: push\n"})
    cache = DocumentCache()
    result = load_directory(tmp_path, cache)
    assert result.findings == [] and result.files == 5
    assert result.repo.origins[("Model", "m")] == Origin("models/m.yaml", 1)
    (tmp_path / "deployments" / "d.yaml").write_text(DEPLOYMENT.replace("version: 1.0.0", "version: 1.1.0"))
    again = load_directory(tmp_path, cache)
    assert cache.misses == 6
    assert again.repo.deployments["d"].spec.version == "1.1.0"


class GeneralConstruction(YamlLoader):
    """YamlLoader with PyYAML's own construction for every document: the reference."""

    def construct_document(self, node):
        return yaml.constructor.BaseConstructor.construct_document(self, node)


CONSTRUCTION_CASES = [
    # id, YAML text; every case must come out as PyYAML constructs it
    ("plain-tree", "a: {b: [1, -2.5, true, null, ~, '', x]}\nc: [[], {}]\n"),
    ("yaml-1-1-lookalikes", "a: yes\nb: 12:30\nc: 2024-05-01\nd: 0o17\ne: 010\nf: 0x1F\ng: .inf\nh: 1_000\n"),
    ("several-documents", "a: 1\n---\n---\n- b\n---\nplain scalar\n"),
    ("alias-of-a-mapping", "a: &x {k: v}\nb: *x\n"),
    ("alias-of-a-scalar", "a: &x text\nb: *x\n"),
    ("aliases-of-aliases", "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n"),
    ("recursive-alias", "a: &x [1, *x]\n"),
    ("merge-key", "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n"),
    ("merge-list", "a: &a {x: 1}\nb: &b {y: 2}\nc: {<<: [*a, *b], z: 3}\n"),
    ("explicit-tags", "a: !!str 123\nb: !!int '7'\nc: !!float '1'\nd: !!binary aGk=\ne: !!timestamp 2024-05-01\n"),
    ("unknown-tags", "a: !thing x\nb: !!python/name:os.system x\n"),  # refused
    ("set", "a: !!set {x, y}\n"),
    ("omap", "a: !!omap [{x: 1}, {y: 2}]\n"),
    ("pairs", "a: !!pairs [{x: 1}, {x: 2}]\n"),
    ("non-string-keys", "1: one\ntrue: yes\n~: none\n1.5: f\n"),
    ("key-that-equals-an-int-key", "1: a\n'1': b\n"),
    ("complex-key", "? [a, b]\n: c\n"),  # refused: a list is no key
    ("value-key", "=: v\n"),
    ("duplicate-keys", "a: 1\nb: {c: 1, c: 2}\na: 3\n"),
]


@pytest.mark.parametrize("text", [case[1] for case in CONSTRUCTION_CASES], ids=[case[0] for case in CONSTRUCTION_CASES])
def test_documents_are_constructed_as_pyyaml_constructs_them(text: str) -> None:
    def construct(loader_class: type[YamlLoader]) -> tuple[str | bytes, ...]:
        loader = loader_class(text)
        documents = []
        try:
            while loader.check_node():
                documents.append(loader.construct_document(loader.get_node()))
        except yaml.YAMLError as error:
            return "refused", str(error)
        finally:
            loader.dispose()
        duplicates = [(key.start_mark.line, key.start_mark.column, first) for key, first in loader.duplicate_keys]
        # pickle: recursive lists compare too, and so do objects shared through aliases
        return pickle.dumps(documents), repr(duplicates)

    assert construct(YamlLoader) == construct(GeneralConstruction)


def test_nesting_deeper_than_python_recursion_still_loads() -> None:
    depth = sys.getrecursionlimit()
    data = yaml.load("[" * depth + "]" * depth, Loader=YamlLoader)
    for _ in range(depth - 1):
        (data,) = data
    assert data == []


def test_a_load_reads_its_cache_misses_with_one_call_per_source() -> None:
    single_reads: list[str] = []
    bulk_reads: list[list[str]] = []

    def read_many(keys: list[str]) -> dict[str, bytes]:
        bulk_reads.append(keys)
        return {key: contents[key] for key in keys}

    def with_bulk_reader(files: list[RepoFile]) -> list[RepoFile]:
        # The flag file has no bulk reader: it is read on its own.
        return [f if f.path.endswith(".json") else replace(f, read_many=read_many) for f in files]

    changed = {**GOOD_REPO, **edit("deployments/d.yaml", "version: 1.0.0", "version: 1.1.0")}
    contents = {f.key: f.read() for f in repo_files({**GOOD_REPO, "deployments/d2.yaml": changed["deployments/d.yaml"]})}
    cache = DocumentCache()
    files = repo_files(GOOD_REPO, single_reads)
    first = load_tree(with_bulk_reader(files), cache)
    assert first.findings == [] and first.files == 5
    assert single_reads == ["flags/fleet.flagd.json"]
    yaml_files = sorted((f for f in files if f.path.endswith(".yaml")), key=lambda f: f.path)
    assert bulk_reads == [[f.key for f in yaml_files]]

    files = repo_files(changed, single_reads)
    second = load_tree(with_bulk_reader(files), cache)
    assert second.repo.deployments["d"].spec.version == "1.1.0"
    assert single_reads == ["flags/fleet.flagd.json"]  # not read again
    assert bulk_reads[1:] == [[next(f.key for f in files if f.path == "deployments/d.yaml")]]


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.parametrize("enabled", [True, False])
def test_a_load_leaves_the_collector_as_it_found_it(enabled: bool, unfrozen: None) -> None:
    was_enabled = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        load(edit("sites/stores.yaml", "region: us", "region: eu"))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was_enabled else gc.disable)()


def test_a_load_that_parsed_much_moves_the_models_out_of_the_collectors_way(unfrozen: None) -> None:
    cache = DocumentCache()
    first = load(cache=cache).repo.sites["store-1"]
    # One file of five: its few objects are left to the collector.
    changed = load(edit("deployments/d.yaml", "version: 1.0.0", "version: 1.1.0"), cache).repo.deployments["d"]

    tracked = {id(obj) for obj in gc.get_objects()}
    assert id(first) not in tracked and id(changed) in tracked
    gc.unfreeze()
    assert id(first) in {id(obj) for obj in gc.get_objects()}
