"""Status records for ``reconciler status`` run in an ordinary clone. ``git clone`` brings branches
and tags, not ``refs/reconciler/status/*``, so a clone alone would show every site unknown: the
records are fetched from the clone's ``origin`` into a throwaway cache (the clone is not written)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.gitdoor.source import GitSource
from reconciler.history.archive import StatusArchive
from reconciler.history.timeline import OpenFleet
from reconciler.manifests.fleet import FleetRepo
from reconciler.status.gitref import STATUS_REF_PREFIX, StatusRefs
from reconciler.status.record import StatusRecord
from reconciler.status.signed import Ignored, RecordCheck, StatusKeyring

REMOTE = "origin"
FETCH_HINT = f"git fetch {REMOTE} '+{STATUS_REF_PREFIX}*:{STATUS_REF_PREFIX}*'"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[^/:]+@[^/:]+:")  # scheme://... or user@host:path


def status_records(opened: OpenFleet, location: str,
                   fleet: FleetRepo) -> tuple[dict[str, StatusRecord], str | None, list[Ignored]]:
    """Every site's newest record that verifies against ``fleet``'s Site documents, a note for the
    user when they may be incomplete, and the records ignored."""
    check = RecordCheck(StatusKeyring.of_fleet(fleet))
    records, note = _records(opened, location, check)
    return records, note, check.ignored


def _records(opened: OpenFleet, location: str, check: RecordCheck) -> tuple[dict[str, StatusRecord], str | None]:
    if not opened.in_place:
        return _archived(opened, check), None
    origin = _origin_url(opened, Path(location))
    if origin is None:
        records = _archived(opened, check)
        note = None if records else (
            f"{location} holds no status records and has no remote {REMOTE!r} to fetch them from; "
            f"in a clone, fetch them with {FETCH_HINT}, or pass --repo <the fleet repo's URL>")
        return records, note
    with tempfile.TemporaryDirectory(prefix="reconciler-status-") as scratch, \
            GitSource(origin, opened.source.branch, Path(scratch)) as source:
        try:
            return StatusRefs(source).read_all(check), None
        except ReconcilerError as error:
            note = (f"cannot fetch the status records from {REMOTE} ({error}); showing those {location} holds, "
                    f"which may be old: fetch them with {FETCH_HINT}")
            return _archived(opened, check), note


def _archived(opened: OpenFleet, check: RecordCheck) -> dict[str, StatusRecord]:
    return StatusArchive(opened.source, fetch=not opened.in_place, check=check).latest


def _origin_url(opened: OpenFleet, location: Path) -> str | None:
    url = opened.source.git.config_value(f'remote "{REMOTE}"', "url")
    if url is None or not url.strip():
        return None
    url = url.strip()
    return url if _URL.match(url) or Path(url).is_absolute() else str((location / url).resolve())
