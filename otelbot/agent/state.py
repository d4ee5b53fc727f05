"""What the agent must remember across restarts: when each index was last seen in use.

PostgreSQL's ``idx_scan`` starts again from zero after a stats reset (``pg_stat_reset*``, a
crash, a major upgrade), so "zero scans" alone does not mean "unused". The agent records, per
index, when it first saw it and the last time its scan counter moved, in a small JSON file.
An index is unused only when no scan was seen for the whole observation window.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("otelbot.agent.state")


@dataclass
class IndexObservation:
    oid: int
    first_seen: float
    last_used: float | None  # None: never seen in use
    scans: int

    def observe(self, scans: int, now: float) -> None:
        if scans > self.scans or (scans < self.scans and scans > 0):
            # It moved up, or the counter was reset and the index was used since then.
            self.last_used = now
        self.scans = scans

    def unused_for(self, now: float) -> float:
        """How long the index has been seen without any scan."""
        since = self.last_used if self.last_used is not None else self.first_seen
        return now - since

    def is_unused(self, now: float, window: float) -> bool:
        """No scan seen for the whole window (a zero window flags never-used indexes at once)."""
        idle = self.unused_for(now)
        return idle >= window if self.last_used is None else idle > window


class IndexUsageStore:
    """Index observations per database, saved to ``path`` (kept in memory if unwritable)."""

    def __init__(self, path: Path | None, readonly: bool = False) -> None:
        self._path = path
        self._readonly = readonly
        self._data: dict[str, dict[str, IndexObservation]] = {}
        self._save_failed = False
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable state file %s: %s", path, exc)
            return
        for db, indexes in raw.get("indexes", {}).items():
            self._data[db] = {name: IndexObservation(**obs) for name, obs in indexes.items()}

    def observe(
        self, database: str, index: str, oid: int, scans: int, now: float
    ) -> IndexObservation:
        per_db = self._data.setdefault(database, {})
        obs = per_db.get(index)
        if obs is None or obs.oid != oid:  # new, or dropped and created again
            obs = IndexObservation(oid, now, now if scans > 0 else None, scans)
            per_db[index] = obs
        else:
            obs.observe(scans, now)
        return obs

    def forget_missing(self, database: str, present: set[str]) -> None:
        per_db = self._data.get(database, {})
        for name in list(per_db):
            if name not in present:
                del per_db[name]

    def save(self) -> None:
        if self._path is None or self._readonly:
            return
        body = {
            "version": 1,
            "indexes": {
                db: {name: asdict(obs) for name, obs in idx.items()}
                for db, idx in self._data.items()
            },
        }
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".state-")
            with os.fdopen(fd, "w") as f:
                json.dump(body, f)
            os.replace(tmp, self._path)
            self._save_failed = False
        except OSError as exc:
            if not self._save_failed:
                log.warning(
                    "cannot save the agent state to %s (%s); unused-index observations will "
                    "not survive a restart: set state_file to a writable path",
                    self._path,
                    exc,
                )
                self._save_failed = True
