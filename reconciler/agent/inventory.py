"""What a site runs on, for its status record (``inventory``): the system, onnxruntime and its
execution providers, accelerators, and site-local facts from the executables in the site's
``inventoryDir`` printing ``key=value`` lines (Mender's inventory scripts). Those run bounded in
time and output; a bad line, a failing or hanging script is refused and said in ``localErrors``,
never a failed reconcile. Collected at the first record and then at most every REFRESH.

The parsers are pure (text in, facts out); ``collect`` reads the machine."""

from __future__ import annotations

import glob
import json
import logging
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from reconciler import reasons
from reconciler.status.record import SiteInventory

log = logging.getLogger("reconciler.agent")

REFRESH = timedelta(hours=1)
SCRIPT_TIMEOUT = 10.0  # seconds each inventory executable may take
SCRIPT_OUTPUT_LIMIT = 16 * 1024  # bytes each may print
ONNXRUNTIME_TIMEOUT = 60.0  # importing onnxruntime on a busy small box
_ONNXRUNTIME_FACTS = "import json, onnxruntime as o; print(json.dumps([o.__version__, o.get_available_providers()]))"
MAX_LOCAL_FACTS = 64  # over all executables: the record stays small
MAX_VALUE = 256
DISK_STEP_MIB = 100  # free space rounded down to it: a few MiB more or less is no new record
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ACCELERATOR_DEVICES = ("/dev/nvidia[0-9]*", "/dev/dri/renderD*", "/dev/apex_*", "/dev/hailo*", "/dev/accel/accel*")


class ScriptFailed(Exception):
    """An inventory executable that gave no usable output: why, in words for localErrors."""


# --- pure: text in, facts out ---------------------------------------------------------------------

def parse_facts(source: str, text: str) -> tuple[dict[str, str], list[str]]:
    """``key=value`` lines; each other non-blank line refused with its number and why."""
    facts: dict[str, str] = {}
    refused = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, equals, value = line.partition("=")
        if not equals:
            problem = "not key=value"
        elif not _KEY.fullmatch(key):
            problem = f"key {key[:40]!r} is not 1-64 letters, digits, '_', '.', '-'"
        elif len(value) > MAX_VALUE or not value.isprintable():
            problem = f"value of {key} is longer than {MAX_VALUE} characters or not printable"
        elif key in facts:
            problem = f"{key} given twice, the first kept"
        else:
            facts[key] = value
            continue
        refused.append(f"{source} line {number}: {problem}")
    return facts, refused


def merge_local(outputs: Iterable[tuple[str, dict[str, str]]]) -> tuple[dict[str, str], list[str]]:
    """The facts of all executables, in order: a key another already gave, or one past
    MAX_LOCAL_FACTS, is refused."""
    merged: dict[str, str] = {}
    refused = []
    for source, facts in outputs:
        for key, value in facts.items():
            if key in merged:
                refused.append(f"{source}: {key} already given by another executable, the first kept")
            elif len(merged) >= MAX_LOCAL_FACTS:
                refused.append(f"{source}: {key} refused, more than {MAX_LOCAL_FACTS} facts in all")
            else:
                merged[key] = value
    return merged, refused


def cpu_model(cpuinfo: str) -> str | None:
    """The CPU's name in /proc/cpuinfo: ``model name`` on x86, ``Model`` or ``Hardware`` on ARM boards."""
    fields = {}
    for line in cpuinfo.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields.setdefault(name.strip(), value.strip())
    return next((fields[name] for name in ("model name", "Model", "Hardware", "cpu model") if fields.get(name)), None)


def same_facts(a: SiteInventory | None, b: SiteInventory) -> bool:
    """Equal but for when they were collected."""
    return a is not None and a.model_dump(exclude={"collectedAt"}) == b.model_dump(exclude={"collectedAt"})


# --- the machine ----------------------------------------------------------------------------------

def collect(state: Path, inventory_dir: Path | None, now: datetime) -> SiteInventory:
    onnxruntime_version, providers = onnxruntime_facts()
    local, refused = run_inventory_dir(inventory_dir) if inventory_dir is not None else ({}, [])
    try:
        disk_free = shutil.disk_usage(state).free // 2**20 // DISK_STEP_MIB * DISK_STEP_MIB
    except OSError:
        disk_free = None
    return SiteInventory(
        os=_os_name(), kernel=platform.release(), arch=platform.machine(), cpus=os.cpu_count() or 1,
        cpuModel=cpu_model(_read("/proc/cpuinfo")) or platform.processor() or None,
        memoryMiB=_memory_mib(), diskFreeMiB=disk_free,
        onnxruntime=onnxruntime_version, executionProviders=providers,
        accelerators=sorted(path for pattern in ACCELERATOR_DEVICES for path in glob.glob(pattern)),
        local=local, localErrors=refused, collectedAt=now)


def onnxruntime_facts() -> tuple[str, list[str]]:
    """Its version and execution providers: from the one this process serves with, else asked of a
    child process as validation asks (an agent that only converges loads no onnxruntime)."""
    serving = sys.modules.get("onnxruntime")
    if serving is not None:
        return serving.__version__, list(serving.get_available_providers())
    try:
        output = run_bounded([sys.executable, "-I", "-c", _ONNXRUNTIME_FACTS], ONNXRUNTIME_TIMEOUT, SCRIPT_OUTPUT_LIMIT)
        version, providers = json.loads(output)
    except (ScriptFailed, ValueError) as failed:
        return f"unknown (asking it failed: {failed})", []
    return str(version), [str(name) for name in providers]


def run_inventory_dir(directory: Path) -> tuple[dict[str, str], list[str]]:
    """Every executable file in ``directory`` (sorted by name, hidden ones left out), each bounded
    by SCRIPT_TIMEOUT and SCRIPT_OUTPUT_LIMIT, their facts merged."""
    try:
        entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        return {}, [f"{directory}: cannot list: {exc.strerror}"]
    outputs, refused = [], []
    for path in entries:
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        try:
            text = run_bounded([str(path)], SCRIPT_TIMEOUT, SCRIPT_OUTPUT_LIMIT).decode(errors="replace")
        except ScriptFailed as failed:
            refused.append(f"{path.name}: {failed}")
            continue
        facts, bad_lines = parse_facts(path.name, text)
        outputs.append((path.name, facts))
        refused += bad_lines
    merged, clashes = merge_local(outputs)
    for problem in refused + clashes:
        log.warning("inventory: %s", problem, extra={"reason": reasons.InventoryFactRefused})
    return merged, refused + clashes


def run_bounded(command: Sequence[str], timeout: float, limit: int) -> bytes:
    """Its standard output; ScriptFailed when it runs longer than ``timeout`` seconds, prints more
    than ``limit`` bytes, cannot start or exits non-zero. Its process group is killed in any case:
    nothing it started outlives it."""
    try:
        child = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise ScriptFailed(f"cannot run: {exc.strerror}") from None
    deadline = time.monotonic() + timeout
    output = bytearray()
    try:
        while chunk := _read_before(child, deadline, timeout):
            output += chunk
            if len(output) > limit:
                raise ScriptFailed(f"printed more than {limit} bytes")
        try:
            returncode = child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise ScriptFailed(f"ran longer than {timeout:g} s") from None
    finally:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is gone already
            pass
        child.wait()
        child.stdout.close()
    if returncode != 0:
        raise ScriptFailed(f"exited with {returncode}")
    return bytes(output)


def _read_before(child: subprocess.Popen[bytes], deadline: float, timeout: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([child.stdout], [], [], left)[0]:
        raise ScriptFailed(f"ran longer than {timeout:g} s")
    return os.read(child.stdout.fileno(), 65536)


def _memory_mib() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (OSError, ValueError):  # a system that does not say
        return None


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME") or platform.system()
    except OSError:
        return platform.system()


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


class InventoryCache:
    """The site's inventory for each record: collected at the first, then again once REFRESH has
    passed; a refresh that finds the same facts keeps the earlier one, so it costs no new record."""

    def __init__(self, state: Path, inventory_dir: Path | None, refresh: timedelta = REFRESH):
        self.state, self.inventory_dir, self.refresh = state, inventory_dir, refresh
        self.current: SiteInventory | None = None
        self.refreshed: datetime | None = None

    def __call__(self, now: datetime) -> SiteInventory | None:
        if self.refreshed is None or now - self.refreshed >= self.refresh:
            self.refreshed = now
            try:
                fresh = collect(self.state, self.inventory_dir, now)
            except Exception as exc:  # a fact that cannot be read never fails a reconcile
                log.warning("inventory not collected: %s", exc, extra={"reason": reasons.InventoryFailed})
                return self.current
            if not same_facts(self.current, fresh):
                self.current = fresh
        return self.current
