"""The status archive: every site's status records, read in bulk from the status refs
``refs/reconciler/status/<site>`` (one fetch, one ``git log`` over every status ref, one
``git cat-file --batch`` for the records needed), whole or as of a moment. StatusRefs dates each
status commit with its record's ``writtenAt``: the point-in-time read uses those dates to read one
record per site, checks ``writtenAt`` itself, and reads a site's whole ref where the two disagree.
With a RecordCheck, only records whose signatures it admits are read (status/signed.py)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from reconciler.gitdoor.source import GitSource
from reconciler.history.audit import as_utc
from reconciler.status.gitref import STATUS_FILE, STATUS_REF_PREFIX, StatusRefs, parse_record
from reconciler.status.record import StatusRecord
from reconciler.status.signed import SIGNATURE_FILE, RecordCheck


@dataclass(frozen=True)
class StatusCommit:
    sha: str
    time: int  # commit date: StatusRefs writes the record's writtenAt there


History = list[tuple[str, StatusRecord]]  # (status commit, record), oldest first, as StatusRefs.history gives


class StatusArchive:
    """Every site's status records, read in bulk. ``latest`` is each site's newest record."""

    FIRST_WINDOW = 3600  # seconds before a moment asked about that the first walk reaches back

    def __init__(self, source: GitSource, sites: Collection[str] | None = None, fetch: bool = True,
                 check: RecordCheck | None = None):
        """``fetch``: bring every status ref from the source's remote first (one fetch); without
        it, the refs the source's repository holds are read. ``check``: the signature check, which
        also collects the records it ignored."""
        self._source = source
        self.check = check
        fetched = StatusRefs(source).read_all(check) if fetch else None
        refs = source.git.for_each_ref(STATUS_REF_PREFIX, "%(refname) %(objectname)")
        tips = {ref.removeprefix(STATUS_REF_PREFIX): sha for ref, sha in (line.split() for line in refs)}
        if fetched is None:  # as read_all reads them: each ref's newest record, if it parses
            records = self._records({sha: site for site, sha in tips.items()})
            fetched = {site: records[sha] for site, sha in tips.items() if sha in records}
        self.latest = fetched
        self._tips = {site: sha for site, sha in tips.items() if sites is None or site in sites}

    @property
    def sites(self) -> list[str]:
        return sorted(self._tips)

    def histories(self, sites: Iterable[str] | None = None) -> dict[str, History]:
        """Every record of each site (default: every site read)."""
        tips = {site: self._tips[site] for site in (self._tips if sites is None else sites)}
        parent_of = self._log(tips.values())
        chains = {site: _chain(tip, parent_of)[0] for site, tip in tips.items()}
        records = self._records({c.sha: site for site, chain in chains.items() for c in chain})
        return {site: [(c.sha, records[c.sha]) for c in reversed(chain) if c.sha in records]
                for site, chain in chains.items()}

    def histories_as_of(self, at: datetime) -> dict[str, History]:
        """Enough of every site's history to find its record in force at ``at`` with serving_at.
        Commit dates point at the newest record dated by then; that record and the one after it
        must bear their commits' dates out, else the site's whole history is read."""
        cutoff = at.timestamp()
        pairs: dict[str, tuple[StatusCommit | None, StatusCommit | None]] = {}
        for site, chain in self._chains_reaching(cutoff).items():  # newest first
            index = next((i for i, c in enumerate(chain) if c.time <= cutoff), len(chain))
            pairs[site] = (chain[index] if index < len(chain) else None, chain[index - 1] if index else None)
        records = self._records({c.sha: site for site, pair in pairs.items() for c in pair if c is not None})
        found: dict[str, History] = {}
        unsure = []
        for site, (candidate, newer) in pairs.items():
            dated_right = all(c is None or (c.sha in records and _seconds(records[c.sha]) == c.time)
                              for c in (candidate, newer))
            # Within the second of ``at`` the candidate may still be after it: then read on.
            if dated_right and (candidate is None or as_utc(records[candidate.sha].writtenAt) <= at):
                found[site] = [(candidate.sha, records[candidate.sha])] if candidate else []
            else:
                unsure.append(site)
        return found | self.histories(unsure)

    def _chains_reaching(self, cutoff: float) -> dict[str, list[StatusCommit]]:
        """Per site, its newest commits down to the first one dated at or before ``cutoff`` (or
        down to its first). ``git log --since`` stops each walk early; sites that wrote nothing in
        the window are walked on from where they stopped, over a window four times as long."""
        chains: dict[str, list[StatusCommit]] = {site: [] for site in self._tips}
        pending = dict(self._tips)  # site -> the commit its walk goes on from
        window = self.FIRST_WINDOW
        while pending:
            since: int | None = int(cutoff) - window
            if since is not None and since <= 0:
                since = None
            parent_of = self._log(pending.values(), since)
            for site, start in list(pending.items()):
                walked, stopped_at = _chain(start, parent_of, cutoff)
                chains[site] += walked
                if stopped_at is None or since is None:  # done, or its history goes no further here
                    del pending[site]
                else:
                    pending[site] = stopped_at
            window *= 4
        return chains

    def _log(self, starts: Iterable[str], since: int | None = None) -> dict[str, tuple[int, str | None]]:
        """Commit date and first parent of every commit reachable from ``starts`` (dated at or
        after ``since``), from one ``git log``."""
        starts = list(starts)
        if not starts:
            return {}
        limit = [f"--since=@{since}"] if since is not None else []
        listing = self._source.git.log("--format=%H %ct %P", *limit, *starts)
        parent_of: dict[str, tuple[int, str | None]] = {}
        for line in listing.splitlines():
            sha, time, *parents = line.split()
            parent_of[sha] = (int(time), parents[0] if parents else None)
        return parent_of

    def _records(self, site_of: Mapping[str, str]) -> dict[str, StatusRecord]:
        """The records of these status commits (mapped to their sites), through one cat-file."""
        shas = list(site_of)
        if not shas:
            return {}
        files = (STATUS_FILE, SIGNATURE_FILE) if self.check else (STATUS_FILE,)
        contents = iter(self._source.git.read_objects([f"{sha}:{name}" for sha in shas for name in files]))
        records = {}
        for sha in shas:
            data = next(contents)
            signature = next(contents) if self.check else None
            if self.check and not self.check.admit(site_of[sha], sha, data, signature):
                continue
            record = parse_record(data, sha, site_of[sha])
            if record is not None:
                records[sha] = record
        return records


def _chain(start: str, parent_of: Mapping[str, tuple[int, str | None]],
           cutoff: float | None = None) -> tuple[list[StatusCommit], str | None]:
    """The first-parent commits from ``start`` that ``parent_of`` knows, newest first, ending at
    the first one dated by ``cutoff``; and the commit where the walk would go on (None: done)."""
    chain: list[StatusCommit] = []
    sha: str | None = start
    while sha is not None and sha in parent_of:
        time, parent = parent_of[sha]
        chain.append(StatusCommit(sha, time))
        if cutoff is not None and time <= cutoff:
            return chain, None
        sha = parent
    return chain, sha


def _seconds(record: StatusRecord) -> int:
    return int(as_utc(record.writtenAt).timestamp())
