"""Package lists of images, recorded in the history database: what each build installed (its
inventory), and what each source it started from held, keyed by disk sha256 or AMI id.

The planner reads them to find the updates the archive has for a published image without booting
it; a build reads its source's list to know which updates its patch step will apply.
"""

from __future__ import annotations

import json
from contextlib import closing

from bake.history import now
from bake.packages import Package
from bake.tables import HistoryTable

SCHEMA = """
CREATE TABLE IF NOT EXISTS package_lists (
    subject TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    packages TEXT NOT NULL,
    recorded TEXT NOT NULL
);
"""

# Where a build leaves its lists on the host: the build machine's before the steps and after.
SOURCE_LIST = "source-packages.tsv"
IMAGE_LIST = "packages.tsv"


class Inventory(HistoryTable):
    """The package lists of one state directory's history database."""

    SCHEMA = SCHEMA

    def record(self, subject: str, image: str, packages: list[Package]) -> None:
        """Keep `packages` as the list of `subject` (a disk's sha256 or an AMI id); a list
        recorded again replaces the earlier one."""
        text = json.dumps([package.to_dict() for package in sorted(packages)])
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO package_lists (subject, image, packages, recorded)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(subject) DO UPDATE SET"
                " image = excluded.image, packages = excluded.packages,"
                " recorded = excluded.recorded",
                (subject, image, text, now()),
            )

    def packages(self, *subjects: str | None) -> list[Package] | None:
        """The list of the first of `subjects` that has one, or None."""
        with closing(self._connect()) as db:
            for subject in subjects:
                if not subject:
                    continue
                row = db.execute(
                    "SELECT packages FROM package_lists WHERE subject = ?", (subject,)
                ).fetchone()
                if row is not None:
                    return [Package.from_dict(item) for item in json.loads(row[0])]
        return None

    def alias(self, subject: str, alias: str) -> None:
        """Record `subject`'s list under `alias` too (a disk's list under its AMI, once known)."""
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO package_lists (subject, image, packages, recorded)"
                " SELECT ?, image, packages, recorded FROM package_lists WHERE subject = ?"
                " ON CONFLICT(subject) DO NOTHING",
                (alias, subject),
            )
