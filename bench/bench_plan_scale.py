"""Plan for one site in a repo of 10 000 sites and 500 deployments: <= 1 s; unchanged files are
not re-parsed.

A fleet repo is generated (deterministically), committed to git and fetched into a bare cache, and
read the way the agent reads it: GitSource.files(sha) (blob ids as cache keys) -> load_tree (which
reads its cache misses in one batch) -> plan_site.
  cold: a fresh GitSource and DocumentCache; reported as a ratio to a bare yaml.load_all of the
        same bytes, read in advance, with the PyYAML class the loader builds on (no duplicate-key
        check, no validation, no findings).
  warm: the same cache after a commit that changes one deployment file; must parse that file
        only (checked by counting reads) and take <= 1 s. `git ls-tree -r` alone is timed beside
        it for context.

    .venv/bin/python bench/bench_plan_scale.py [--quick] [--repetitions N]"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from common import Stats, arguments, emit, interleaved, machine  # first: puts the repo root on sys.path

from reconciler.delivery.model import SiteState
from reconciler.delivery.plan import Plan, plan_site
from reconciler.devtools.githttp import run_git
from reconciler.gitdoor.source import GitSource
from reconciler.manifests.loader import DocumentCache, is_manifest_path, load_tree
from reconciler.manifests.selectors import matches
from reconciler.manifests.yamlreader import YamlLoader

SITES, MODELS, DEPLOYMENTS = 10_000, 50, 500
WARM_TARGET_S = 1.0
COLD_REPETITIONS = 3
SEED = 20240501
NOW = datetime(2025, 3, 12, 2, 30, tzinfo=UTC)  # inside some sites' maintenance windows

REGIONS = {"eu-central": "Europe/Berlin", "eu-west": "Europe/Dublin", "us-east": "America/New_York",
           "us-west": "America/Los_Angeles", "ap-south": "Asia/Kolkata", "ap-east": "Asia/Tokyo"}
TIERS = ("store", "factory", "warehouse")
ARCHES = ("amd64", "arm64")
RINGS = ("pilot", "standard", "standard", "standard", "late")
ACCELERATORS = ("nvidia-t4", "jetson-orin")
BOOL_FLAGS = ("launch-eu", "launch-fractional", "pilot-only")


# --- the generated fleet --------------------------------------------------------------------------

def document(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    metadata: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    return yaml.safe_dump({"apiVersion": "reconciler/v1", "kind": kind, "metadata": metadata, "spec": spec},
                          sort_keys=False)


def fleet_file() -> str:
    waves = [{"name": "canary", "percent": 5}, {"name": "early", "percent": 30}, {"name": "all", "percent": 100}]
    return document("Fleet", "bench", {"pollInterval": "30s", "defaultRollout": {
        "waves": waves, "gate": {"minHealthyRatio": 0.95, "bakeTime": "10m"}, "abort": {"failureThreshold": 0.1}}})


def site_file(rng: random.Random, name: str, region: str, tier: str) -> str:
    labels = {"region": region, "tier": tier, "arch": rng.choice(ARCHES), "ring": rng.choice(RINGS)}
    if tier == "factory" and rng.random() < 0.5:
        labels["accelerator"] = rng.choice(ACCELERATORS)
    spec: dict[str, Any] = {"description": f"{tier} in {region}"}
    if rng.random() < 0.4:
        start = rng.randrange(0, 4)
        spec["maintenanceWindows"] = [{"days": rng.sample(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], 3),
                                       "start": f"{start:02d}:00", "end": f"{start + 3:02d}:00",
                                       "timezone": REGIONS[region]}]
    return document("Site", name, spec, labels)


def model_versions(rng: random.Random) -> list[str]:
    return ["1.0.0", "1.1.0", "2.0.0"][: rng.choice((2, 3))]


def model_file(name: str, versions: list[str]) -> str:
    def version(v: str) -> dict[str, Any]:
        uri = f"models/{name}/{v}/model.onnx"
        digest = "sha256:" + hashlib.sha256(uri.encode()).hexdigest()
        return {"version": v,
                "artifacts": [{"uri": uri, "digest": digest, "size": 4096,
                               "signature": {"uri": uri + ".sig", "format": "cosign"}}],
                "validation": [{"name": "smoke", "inputs": {"x": [[0.5, 1.0, -1.0, 2.0]]},
                                "expected": {"y": [[0.25]]}, "tolerance": 0.001}]}

    interface = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
                 "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 1]}]}
    return document("Model", name, {"description": f"benchmark model {name}", "interface": interface,
                                     "versions": [version(v) for v in versions]}, {"team": "bench"})


def deployment_spec(rng: random.Random, models: dict[str, list[str]]) -> dict[str, Any]:
    model = rng.choice(sorted(models))
    targets: dict[str, Any] = {"matchLabels": {"tier": rng.choice(TIERS)}}
    if rng.random() < 0.5:
        targets["matchLabels"]["region"] = rng.choice(sorted(REGIONS))
    if rng.random() < 0.4:
        targets["matchExpressions"] = [rng.choice([
            {"key": "arch", "operator": "In", "values": [rng.choice(ARCHES)]},
            {"key": "ring", "operator": "NotIn", "values": ["late"]},
            {"key": "accelerator", "operator": "DoesNotExist"},
        ])]
    spec: dict[str, Any] = {"model": model, "version": rng.choice(models[model]), "targets": targets}
    if rng.random() < 0.1:
        spec["enabled"] = {"flag": rng.choice(BOOL_FLAGS)}
    if rng.random() < 0.4:
        spec["rollout"] = {"waves": [{"name": "pilot", "selector": {"matchLabels": {"ring": "pilot"}}},
                                     {"name": "early", "percent": rng.choice((10, 25, 50))},
                                     {"name": "all", "percent": 100}],
                           "gate": {"bakeTime": "15m", "progressDeadline": "2h"},
                           "abort": {"failureThreshold": 0.2, "minExecuted": 3}}
    if rng.random() < 0.3:
        analysis = {"window": "1m", "minRequests": 50, "maxErrorRate": 0.01, "maxLatencyP99": "80ms"}
        spec["canary"] = {"steps": [{"setWeight": 10}, {"pause": {"duration": "2m"}}, {"analysis": analysis},
                                    {"setWeight": 50}, {"analysis": analysis}]}
    return spec


def flag_file() -> str:
    def boolean(targeting: dict[str, Any]) -> dict[str, Any]:
        return {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off",
                "targeting": targeting}

    flags = {
        "launch-eu": boolean({"if": [{"$ref": "in-eu"}, "on", "off"]}),
        "launch-fractional": boolean({"fractional": [["on", 30], ["off", 70]]}),
        "pilot-only": boolean({"if": [{"==": [{"var": "ring"}, "pilot"]}, "on", "off"]}),
    }
    return json.dumps({"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": flags,
                       "$evaluators": {"in-eu": {"in": [{"var": "region"}, ["eu-central", "eu-west"]]}}}, indent=2)


def write_fleet(root: Path) -> dict[str, dict[str, Any]]:
    """Writes the whole repo; returns the deployment specs by file path, for later edits."""
    rng = random.Random(SEED)
    files: dict[str, str] = {"fleet.yaml": fleet_file(), "flags/fleet.flagd.json": flag_file()}
    for i in range(SITES):
        region, tier = rng.choice(sorted(REGIONS)), rng.choice(TIERS)
        name = f"{tier}-{region}-{i:05d}"
        files[f"sites/{region}/{name}.yaml"] = site_file(rng, name, region, tier)
    models = {f"model-{i:02d}": model_versions(rng) for i in range(MODELS)}
    for name, versions in models.items():
        files[f"models/{name}/model.yaml"] = model_file(name, versions)
    deployments = {f"deployments/deploy-{i:03d}.yaml": deployment_spec(rng, models) for i in range(DEPLOYMENTS)}
    for path, spec in deployments.items():
        files[path] = document("Deployment", Path(path).stem, spec)
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return {path: {"spec": spec, "versions": models[spec["model"]]} for path, spec in deployments.items()}


def commit_all(root: Path, message: str) -> str:
    run_git(root, "add", "--all")
    run_git(root, "commit", "--quiet", "-m", message)
    return run_git(root, "rev-parse", "HEAD")


def edit_one_deployment(root: Path, path: str, entry: dict[str, Any]) -> str:
    """Moves the deployment to the next version of its model and commits: one changed file."""
    spec, versions = entry["spec"], entry["versions"]
    spec["version"] = versions[(versions.index(spec["version"]) + 1) % len(versions)]
    (root / path).write_text(document("Deployment", Path(path).stem, spec))
    return commit_all(root, f"bump {path}")


# --- measuring ------------------------------------------------------------------------------------

@dataclass
class ReadLog:
    """Which blobs a load read (so parsed), and how long the reads took."""

    blobs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    paths: list[str] = field(default_factory=list)  # of the blobs, filled in after the timed part


class LoggedSource(GitSource):
    """A GitSource that logs its blob reads, one by one or in bulk: the files it lists read
    through these methods, so the load is measured as the agent runs it, with no wrapper
    around each file."""

    def __init__(self, url: str, branch: str, cache_dir: Path) -> None:
        super().__init__(url, branch, cache_dir)
        self.reads = ReadLog()

    def read_blobs(self, blobs: Iterable[str]) -> dict[str, bytes]:
        start = time.perf_counter()
        contents = super().read_blobs(blobs)
        self.reads.seconds += time.perf_counter() - start
        self.reads.blobs.extend(contents)
        return contents

    def _read_blob(self, blob: str) -> bytes:
        start = time.perf_counter()
        data = super()._read_blob(blob)
        self.reads.seconds += time.perf_counter() - start
        self.reads.blobs.append(blob)
        return data


@dataclass
class PlanRun:
    seconds: float
    files_s: float  # ls-tree through GitSource.files
    load_s: float  # load_tree, including the blob reads of the files it parsed
    plan_s: float
    reads: ReadLog
    plan: Plan


def plan_once(source: LoggedSource, sha: str, cache: DocumentCache, site: str) -> PlanRun:
    """What the agent does for one commit, timed in parts, with the blob reads logged."""
    reads = source.reads = ReadLog()
    start = time.perf_counter()
    files = source.files(sha)
    files_s = time.perf_counter() - start
    start = time.perf_counter()
    loaded = load_tree(files, cache)
    load_s = time.perf_counter() - start
    path_of = {f.key: f.path for f in files}  # the generated files' contents are all distinct
    reads.paths = [path_of[blob] for blob in reads.blobs]
    if loaded.errors:
        raise RuntimeError(f"generated fleet is invalid: {[f.render() for f in loaded.errors[:3]]}")
    start = time.perf_counter()
    plan = plan_site(loaded.repo, site, SiteState(site=site), NOW, sha)
    plan_s = time.perf_counter() - start
    return PlanRun(files_s + load_s + plan_s, files_s, load_s, plan_s, reads, plan)


def busiest_site(source: GitSource, sha: str, among: int = 200) -> tuple[str, int]:
    """Of the first ``among`` sites, the one most deployments target: the plan with the most work."""
    repo = load_tree(source.files(sha)).repo
    counts = {name: sum(matches(d.spec.targets, site.metadata.labels) for d in repo.deployments.values())
              for name, site in list(sorted(repo.sites.items()))[:among]}
    name = max(counts, key=lambda n: (counts[n], n))
    return name, counts[name]


def baseline_loader() -> type:
    """The PyYAML loader class the product's YamlLoader is built on, so the ratio compares like with like."""
    c_loader = getattr(yaml, "CSafeLoader", None)
    return c_loader if c_loader is not None and issubclass(YamlLoader, c_loader) else yaml.SafeLoader


def parse_all(contents: list[bytes], loader: type) -> None:
    for data in contents:
        for _ in yaml.load_all(data, Loader=loader):
            pass


def ls_tree(git_dir: Path, sha: str) -> None:
    subprocess.run(["git", "--git-dir", str(git_dir), "ls-tree", "-r", "-z", "--full-tree", sha], check=True,
                   capture_output=True)


@dataclass
class Figures:
    site: str
    targeted: int  # deployments whose selector matches the site
    files: int
    total_bytes: int
    loader: str
    baseline: list[float]
    cold: list[PlanRun]
    warm: list[PlanRun]
    ls_tree: list[float]
    edited: list[str]  # the file each warm commit changed, in order


def measure(warm_repetitions: int, cold_repetitions: int) -> Figures:
    loader = baseline_loader()
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as scratch:
        root = Path(scratch) / "fleet"
        root.mkdir()
        run_git(root, "init", "--quiet", "--initial-branch=main")
        run_git(root, "config", "gc.auto", "0")  # no `git gc --auto` left running in the background
        deployments = write_fleet(root)
        first = commit_all(root, "Generated fleet")
        edited = sorted(deployments)[:warm_repetitions]
        commits = [edit_one_deployment(root, path, deployments[path]) for path in edited]
        cache_dir = Path(scratch) / "cache.git"

        with LoggedSource(str(root), "main", cache_dir) as source:
            source.fetch()  # into a bare cache, packed, as an agent holds it
            site, targeted = busiest_site(source, first)
            contents = [f.read() for f in source.files(first) if is_manifest_path(f.path)]

            cold_runs: list[PlanRun] = []

            def cold() -> None:
                with LoggedSource(str(root), "main", cache_dir) as fresh:
                    cold_runs.append(plan_once(fresh, first, DocumentCache(), site))

            baseline, _ = interleaved(lambda: parse_all(contents, loader), cold, cold_repetitions)

            cache = DocumentCache()
            plan_once(source, first, cache, site)
            warm_runs: list[PlanRun] = []
            pending = iter(commits)
            tree_s, _ = interleaved(lambda: ls_tree(cache_dir, first),
                                    lambda: warm_runs.append(plan_once(source, next(pending), cache, site)),
                                    warm_repetitions)
    return Figures(site, targeted, len(contents), sum(map(len, contents)), loader.__name__,
                   baseline, cold_runs, warm_runs, tree_s, edited)


def parts(runs: list[PlanRun]) -> str:
    def median_ms(values: list[float]) -> str:
        return f"{Stats.of(values).median * 1e3:.0f} ms"

    return (f"files() {median_ms([r.files_s for r in runs])}, load_tree {median_ms([r.load_s for r in runs])} "
            f"(blob reads {median_ms([r.reads.seconds for r in runs])}), plan_site {median_ms([r.plan_s for r in runs])}")


def report(f: Figures) -> None:
    reparsed_ok = all(run.reads.paths == [path] for run, path in zip(f.warm, f.edited, strict=True))
    cold, base = Stats.of([r.seconds for r in f.cold]), Stats.of(f.baseline)
    warm, tree = Stats.of([r.seconds for r in f.warm]), Stats.of(f.ls_tree)
    ratio = cold.median / base.median
    parse_only = Stats.of([r.load_s - r.reads.seconds for r in f.cold]).median
    print(f"plan for one site of {SITES} sites, {DEPLOYMENTS} deployments, {MODELS} models ({machine()})")
    print(f"  repo: {f.files} manifest files, {f.total_bytes / 1e6:.1f} MB; site {f.site}: targeted by "
          f"{f.targeted} deployments, plan has {len(f.warm[-1].plan.actions)} actions")
    print(f"  baseline  bare yaml.load_all ({f.loader})  {base.ms()}")
    print(f"  cold      files+load_tree+plan_site          {cold.ms()}")
    print(f"            {parts(f.cold)}")
    print(f"  cold / baseline = {ratio:.2f}; load_tree without its blob reads / baseline = "
          f"{parse_only / base.median:.2f}")
    print(f"  warm      one deployment changed             {warm.ms()}  (target <= {WARM_TARGET_S:.1f} s)")
    print(f"            {parts(f.warm)}")
    print(f"  context   git ls-tree -r                     {tree.ms()}")
    print(f"  warm loads parsed only the changed file: {'yes' if reparsed_ok else 'NO'} "
          f"(files read per warm load: {sorted({len(r.reads.paths) for r in f.warm})})")
    emit("plan_scale", ratio, f"warm <= {WARM_TARGET_S:.1f} s, unchanged files not re-parsed",
         warm.median <= WARM_TARGET_S and reparsed_ok,
         f"warm {warm.median * 1e3:.0f} ms (1 file parsed: {'yes' if reparsed_ok else 'NO'}); "
         f"cold {cold.median:.2f} s vs bare YAML {base.median:.2f} s",
         ratio_is="cold / bare YAML parse", baseline_loader=f.loader, warm_s=round(warm.median, 4),
         cold=cold.to_json(), baseline=base.to_json(), warm=warm.to_json(), ls_tree=tree.to_json(),
         only_changed_file_parsed=reparsed_ok)


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=10, quick=3)
    report(measure(warm_repetitions=args.repetitions, cold_repetitions=2 if args.quick else COLD_REPETITIONS))


if __name__ == "__main__":
    main()
