"""History of runs, stages, builds and the local image store, in SQLite.

Every run and every stage is written here as it starts and as it ends, and every cloud resource is
recorded before anything waits on it, so a crash leaves a record rather than an orphan.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bake.localhost import pid_alive
from bake.records import Built
from bake.rollouts import Rollout

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    subject TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    ami TEXT,
    error TEXT,
    pid INTEGER,
    started TEXT NOT NULL,
    finished TEXT
);
CREATE TABLE IF NOT EXISTS stages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT,
    outputs TEXT,
    started TEXT NOT NULL,
    finished TEXT,
    seconds REAL
);
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    kind TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    image TEXT NOT NULL,
    digest TEXT NOT NULL,
    source_ami TEXT,
    artifact TEXT,
    ami TEXT,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    sha256 TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    path TEXT NOT NULL,
    ami TEXT,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS verifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    image TEXT NOT NULL,
    subject TEXT NOT NULL,
    suites_digest TEXT NOT NULL,
    passed INTEGER NOT NULL,
    kernel TEXT,
    junit TEXT,
    summary TEXT,
    finished TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    rollout_id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    state TEXT NOT NULL,
    incoming TEXT NOT NULL,
    ami TEXT NOT NULL,
    rollback TEXT NOT NULL,
    rollback_ami TEXT,
    started TEXT NOT NULL,
    updated TEXT NOT NULL,
    last_run TEXT NOT NULL,
    reason TEXT
);
-- Another digest a build answers to: the digest its inputs have once its source's packages are
-- known (the build that first listed them was named before they were).
CREATE TABLE IF NOT EXISTS build_aliases (
    image TEXT NOT NULL,
    alias TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (image, alias)
);
CREATE INDEX IF NOT EXISTS stages_by_run ON stages(run_id);

CREATE INDEX IF NOT EXISTS builds_by_image ON builds(image, digest);
"""


# Columns added to tables after they were first created, added to an older database on open.
ADDED_COLUMNS = {"builds": ("inputs_digest TEXT",)}

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def now() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def new_run_id() -> str:
    """A run's id: when it started (sortable) and a random part."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _seconds_between(started: str, finished: str | None) -> float | None:
    if not finished:
        return None
    elapsed = datetime.strptime(finished, TIME_FORMAT) - datetime.strptime(started, TIME_FORMAT)
    return round(elapsed.total_seconds(), 3)


@dataclass(frozen=True)
class StageRecord:
    name: str
    status: str
    started: str
    finished: str | None
    seconds: float | None
    detail: str | None
    outputs: dict[str, Any]


@dataclass(frozen=True)
class ResourceRecord:
    stage: str
    kind: str
    id: str


@dataclass(frozen=True)
class RunRecord:
    """A run as `bake history --json` shows it; a run whose process is gone reads `interrupted`."""

    run_id: str
    command: str
    subject: str
    target: str
    status: str
    ami: str | None
    error: str | None
    started: str
    finished: str | None
    seconds: float | None
    stages: tuple[StageRecord, ...]
    resources: tuple[ResourceRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BuildRecord:
    run_id: str
    image: str
    digest: str
    source_ami: str
    artifact: str | None
    ami: str | None
    created: str
    inputs_digest: str = ""

    def built(self) -> Built:
        return Built(
            self.image, self.digest, self.source_ami, self.artifact, self.ami, self.inputs_digest
        )


@dataclass(frozen=True)
class ArtifactRecord:
    sha256: str
    image: str
    path: str
    ami: str | None
    created: str


@dataclass(frozen=True)
class VerificationRecord:
    run_id: str
    image: str
    subject: str
    suites_digest: str
    passed: bool
    kernel: str
    junit: str
    summary: str
    finished: str


@dataclass(frozen=True)
class VerifiedBuild:
    """The newest build of an image that passed verification, and what it was verified on."""

    run_id: str
    built: Built
    kernel: str


@dataclass(frozen=True)
class RolloutEntry:
    """A rollout as this machine's history knows it: the run that last moved it, and why it ended
    as it did (the alarm or the failure), when it did."""

    rollout: Rollout
    last_run: str
    updated: str
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.rollout.to_dict(),
            "last_run": self.last_run,
            "updated": self.updated,
            "reason": self.reason,
        }


class History:
    """The SQLite history database of one state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)
            for table, columns in ADDED_COLUMNS.items():
                have = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                for column in columns:
                    if column.split()[0] not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with closing(self._connect()) as db, db:
            cursor = db.execute(sql, params)
            return cursor.lastrowid or 0

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with closing(self._connect()) as db:
            return db.execute(sql, params).fetchall()

    # runs and stages

    def start_run(self, command: str, subject: str, target: str, run_id: str = "") -> str:
        run_id = run_id or new_run_id()
        self._write(
            "INSERT INTO runs (run_id, command, subject, target, status, pid, started)"
            " VALUES (?, ?, ?, ?, 'running', ?, ?) ON CONFLICT(run_id) DO UPDATE SET"
            " command = excluded.command, subject = excluded.subject, target = excluded.target,"
            " status = 'running', pid = excluded.pid",
            (run_id, command, subject, target, os.getpid(), now()),
        )
        return run_id

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        self._write(
            "UPDATE runs SET status = ?, error = ?, finished = ? WHERE run_id = ?",
            (status, error, now(), run_id),
        )

    def set_run_ami(self, run_id: str, ami: str) -> None:
        self._write("UPDATE runs SET ami = ? WHERE run_id = ?", (ami, run_id))

    def start_stage(self, run_id: str, name: str) -> int:
        return self._write(
            "INSERT INTO stages (run_id, name, status, started) VALUES (?, ?, 'running', ?)",
            (run_id, name, now()),
        )

    def finish_stage(
        self, stage_id: int, status: str, detail: str = "", outputs: dict[str, Any] | None = None
    ) -> None:
        finished = now()
        (row,) = self._read("SELECT started FROM stages WHERE id = ?", (stage_id,))
        self._write(
            "UPDATE stages SET status = ?, detail = ?, outputs = ?, finished = ?, seconds = ?"
            " WHERE id = ?",
            (
                status,
                detail,
                json.dumps(outputs or {}),
                finished,
                _seconds_between(row["started"], finished),
                stage_id,
            ),
        )

    def finish_running_stages(self, run_id: str, status: str, detail: str = "") -> None:
        """End the stages of `run_id` still marked running (its process died inside them)."""
        rows = self._read(
            "SELECT id FROM stages WHERE run_id = ? AND status = 'running'", (run_id,)
        )
        for row in rows:
            self.finish_stage(row["id"], status, detail)

    def record_resource(self, run_id: str, stage: str, kind: str, resource_id: str) -> None:
        self._write(
            "INSERT INTO resources (run_id, stage, kind, resource_id, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (run_id, stage, kind, resource_id, now()),
        )

    def runs(self, limit: int = 50) -> list[RunRecord]:
        """The newest runs first, each with its stages and the resources it created."""
        rows = self._read("SELECT * FROM runs ORDER BY started DESC, rowid DESC LIMIT ?", (limit,))
        return [self._run(row) for row in rows]

    def abandoned(self) -> list[RunRecord]:
        """Runs that say they are running but whose process is gone, newest first."""
        rows = self._read("SELECT * FROM runs WHERE status = 'running' ORDER BY started DESC")
        return [self._run(row) for row in rows if not pid_alive(row["pid"])]

    def _run(self, row: sqlite3.Row) -> RunRecord:
        status = row["status"]
        if status == "running" and not pid_alive(row["pid"]):
            status = "interrupted"
        stages = tuple(
            StageRecord(
                stage["name"],
                stage["status"],
                stage["started"],
                stage["finished"],
                stage["seconds"],
                stage["detail"],
                json.loads(stage["outputs"] or "{}"),
            )
            for stage in self._read(
                "SELECT * FROM stages WHERE run_id = ? ORDER BY id", (row["run_id"],)
            )
        )
        resources = tuple(
            ResourceRecord(resource["stage"], resource["kind"], resource["resource_id"])
            for resource in self._read(
                "SELECT * FROM resources WHERE run_id = ? ORDER BY id", (row["run_id"],)
            )
        )
        return RunRecord(
            row["run_id"],
            row["command"],
            row["subject"],
            row["target"],
            status,
            row["ami"],
            row["error"],
            row["started"],
            row["finished"],
            _seconds_between(row["started"], row["finished"]),
            stages,
            resources,
        )

    # builds, artifacts, verifications

    def record_build(self, run_id: str, built: Built) -> None:
        self._write(
            "INSERT INTO builds (run_id, image, digest, source_ami, artifact, ami, created,"
            " inputs_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                built.image,
                built.digest,
                built.source_ami,
                built.artifact,
                built.ami,
                now(),
                built.inputs_digest,
            ),
        )

    def alias_build(self, image: str, alias: str, digest: str) -> None:
        """Let the build `digest` of `image` be found by `alias` too."""
        self._write(
            "INSERT INTO build_aliases (image, alias, digest) VALUES (?, ?, ?)"
            " ON CONFLICT(image, alias) DO UPDATE SET digest = excluded.digest",
            (image, alias, digest),
        )

    def set_build_ami(self, image: str, digest: str, ami: str) -> None:
        self._write(
            "UPDATE builds SET ami = ? WHERE image = ? AND digest = ?", (ami, image, digest)
        )

    def builds(self, image: str, digest: str | None = None) -> list[BuildRecord]:
        """Builds of an image, newest first; only those with `digest` (or known by it as an
        alias) when given."""
        if digest is None:
            rows = self._read("SELECT * FROM builds WHERE image = ? ORDER BY id DESC", (image,))
        else:
            rows = self._read(
                "SELECT * FROM builds WHERE image = ? AND (digest = ? OR digest IN"
                " (SELECT digest FROM build_aliases WHERE image = ? AND alias = ?))"
                " ORDER BY id DESC",
                (image, digest, image, digest),
            )
        return [
            BuildRecord(
                row["run_id"],
                row["image"],
                row["digest"],
                row["source_ami"],
                row["artifact"],
                row["ami"],
                row["created"],
                row["inputs_digest"] or "",
            )
            for row in rows
        ]

    def record_artifact(self, sha256: str, image: str, path: Path) -> None:
        self._write(
            "INSERT INTO artifacts (sha256, image, path, created) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(sha256) DO UPDATE SET path = excluded.path",
            (sha256, image, str(path), now()),
        )

    def set_artifact_ami(self, sha256: str, ami: str) -> None:
        self._write("UPDATE artifacts SET ami = ? WHERE sha256 = ?", (ami, sha256))

    def _artifacts(self, where: str = "", params: tuple[Any, ...] = ()) -> list[ArtifactRecord]:
        rows = self._read(f"SELECT * FROM artifacts {where} ORDER BY created", params)
        return [
            ArtifactRecord(row["sha256"], row["image"], row["path"], row["ami"], row["created"])
            for row in rows
        ]

    def artifact(self, sha256: str) -> ArtifactRecord | None:
        found = self._artifacts("WHERE sha256 = ?", (sha256,))
        return found[0] if found else None

    def artifact_for_ami(self, ami: str) -> ArtifactRecord | None:
        found = self._artifacts("WHERE ami = ?", (ami,))
        return found[0] if found else None

    def artifacts(self) -> list[ArtifactRecord]:
        return self._artifacts()

    def record_verification(
        self,
        run_id: str,
        image: str,
        subject: str,
        suites_digest: str,
        passed: bool,
        kernel: str,
        junit: Path | None,
        summary: str,
    ) -> None:
        self._write(
            "INSERT INTO verifications"
            " (run_id, image, subject, suites_digest, passed, kernel, junit, summary, finished)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                image,
                subject,
                suites_digest,
                int(passed),
                kernel,
                str(junit or ""),
                summary,
                now(),
            ),
        )

    def verification(self, subject: str, suites_digest: str) -> VerificationRecord | None:
        """The newest verification of `subject` (an artifact or AMI) by these suites."""
        rows = self._read(
            "SELECT * FROM verifications WHERE subject = ? AND suites_digest = ?"
            " ORDER BY id DESC LIMIT 1",
            (subject, suites_digest),
        )
        if not rows:
            return None
        row = rows[0]
        return VerificationRecord(
            row["run_id"],
            row["image"],
            row["subject"],
            row["suites_digest"],
            bool(row["passed"]),
            row["kernel"] or "",
            row["junit"] or "",
            row["summary"] or "",
            row["finished"],
        )

    def newest_verified(self, image: str) -> VerifiedBuild | None:
        """The newest build of `image` that passed verification, with what it was verified on."""
        rows = self._read(
            "SELECT b.image, b.artifact, b.ami, b.digest, b.source_ami, b.inputs_digest,"
            " v.kernel, v.run_id"
            " FROM verifications v JOIN builds b"
            " ON b.image = v.image AND (b.artifact = v.subject OR b.ami = v.subject)"
            " WHERE v.image = ? AND v.passed = 1 ORDER BY v.id DESC LIMIT 1",
            (image,),
        )
        if not rows:
            return None
        row = rows[0]
        built = Built(
            row["image"],
            row["digest"],
            row["source_ami"],
            row["artifact"],
            row["ami"],
            row["inputs_digest"] or "",
        )
        return VerifiedBuild(row["run_id"], built, row["kernel"] or "")

    # rollouts

    def record_rollout(self, rollout: Rollout, service: str, run_id: str, reason: str = "") -> None:
        """Write the rollout (keyed by the run that decided it) as `run_id` leaves it."""
        self._write(
            "INSERT INTO rollouts (rollout_id, service, state, incoming, ami, rollback,"
            " rollback_ami, started, updated, last_run, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(rollout_id) DO UPDATE SET"
            " state = excluded.state, updated = excluded.updated,"
            " last_run = excluded.last_run, reason = excluded.reason",
            (
                rollout.run_id,
                service,
                rollout.state,
                rollout.incoming,
                rollout.ami,
                rollout.rollback,
                rollout.rollback_ami,
                rollout.started,
                now(),
                run_id,
                reason or None,
            ),
        )

    def rollout(self, service: str, rollout_id: str | None = None) -> RolloutEntry | None:
        """The service's newest rollout in this history (or the one decided by `rollout_id`)."""
        rows = self._read(
            "SELECT * FROM rollouts WHERE service = ? AND rollout_id = coalesce(?, rollout_id)"
            " ORDER BY updated DESC LIMIT 1",
            (service, rollout_id),
        )
        if not rows:
            return None
        row = rows[0]
        rollout = Rollout(
            row["rollout_id"],
            row["state"],
            row["incoming"],
            row["ami"],
            row["rollback"],
            row["rollback_ami"],
            row["started"],
        )
        return RolloutEntry(rollout, row["last_run"], row["updated"], row["reason"])
