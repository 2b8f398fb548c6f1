"""``reconciler status --inventory``: what each site runs on, from the ``inventory`` of its newest
status record (agent/inventory.py), and which execution provider serves each of its deployments."""

from __future__ import annotations

import json
from collections.abc import Mapping

from reconciler.status.record import SiteInventory, StatusRecord


def render_inventory(records: Mapping[str, StatusRecord], output_format: str) -> str:
    if output_format == "json":
        return json.dumps({site: _as_json(record) for site, record in sorted(records.items())}, indent=2)
    blocks = [_block(site, record, markdown=output_format == "markdown") for site, record in sorted(records.items())]
    return "\n\n".join(blocks) if blocks else "no status records"


def _as_json(record: StatusRecord) -> dict:
    inventory = record.inventory.model_dump(mode="json") if record.inventory else None
    providers = {name: d.executionProvider for name, d in sorted(record.deployments.items())}
    return {"agentVersion": record.agentVersion, "inventory": inventory, "executionProviders": providers}


def _block(site: str, record: StatusRecord, markdown: bool) -> str:
    title = f"### {site}" if markdown else f"{site} (agent {record.agentVersion})"
    lines = [title] + (["", f"agent {record.agentVersion}"] if markdown else [])
    if record.inventory is None:
        lines.append("  no inventory in its newest record (an agent before inventories, or none collected yet)")
    else:
        lines += [f"  {line}" for line in _facts(record.inventory)]
    served = [f"{name} on {d.executionProvider}" for name, d in sorted(record.deployments.items()) if d.executionProvider]
    if served:
        lines.append(f"  serving: {', '.join(served)}")
    return "\n".join(lines)


def _facts(inventory: SiteInventory) -> list[str]:
    memory = f", {inventory.memoryMiB} MiB memory" if inventory.memoryMiB is not None else ""
    disk = f", {inventory.diskFreeMiB} MiB free for state" if inventory.diskFreeMiB is not None else ""
    lines = [
        f"{inventory.os}, kernel {inventory.kernel}, {inventory.arch}",
        f"{inventory.cpus} CPUs ({inventory.cpuModel or 'model unknown'}){memory}{disk}",
        f"onnxruntime {inventory.onnxruntime}: {', '.join(inventory.executionProviders) or 'no providers'}",
    ]
    if inventory.accelerators:
        lines.append(f"accelerators: {', '.join(inventory.accelerators)}")
    lines += [f"{key}={value}" for key, value in sorted(inventory.local.items())]
    lines += [f"refused: {problem}" for problem in inventory.localErrors]
    lines.append(f"collected {inventory.collectedAt:%Y-%m-%d %H:%M:%S}Z")
    return lines
