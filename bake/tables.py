"""A table of the history database that a module of its own keeps (package lists, releases): its
schema made on first use, its connections opened as history's are (WAL, a patient lock)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import ClassVar


class HistoryTable:
    """Subclasses give SCHEMA (CREATE TABLE IF NOT EXISTS ...)."""

    SCHEMA: ClassVar[str]

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(self.SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.row_factory = sqlite3.Row
        return db
