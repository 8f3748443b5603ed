"""The local image store: disk artifacts addressed by their sha256, mapped to AMI ids in history.

An artifact is stored once, read-only, under `sha256/<hex>.qcow2`; the same bytes put twice are one
file. The local cloud's AMIs point at these digests, so an AMI id leads back to a bootable disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from bake.errors import BakeError
from bake.history import History

CHUNK = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ImageStore:
    """Disk images under `directory`, recorded in `history`."""

    def __init__(self, directory: Path, history: History) -> None:
        self.directory = directory
        self.history = history

    def _location(self, sha: str) -> Path:
        if not _SHA256.match(sha):
            raise BakeError(f"'{sha}' is not a sha256 digest of an image")
        return self.directory / "sha256" / f"{sha}.qcow2"

    def put(self, path: Path, image: str) -> str:
        """Move the file at `path` into the store (read-only) and record it; its sha256."""
        sha = sha256_of(path)
        target = self._location(sha)
        if target.is_file():
            path.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            shutil.move(path, partial)
            partial.chmod(0o444)
            os.replace(partial, target)
        self.history.record_artifact(sha, image, target)
        return sha

    def exists(self, sha: str) -> bool:
        return self._location(sha).is_file()

    def path(self, sha: str) -> Path:
        """Where the image with this digest lives; BakeError when the store does not hold it."""
        target = self._location(sha)
        if not target.is_file():
            raise BakeError(
                f"image {sha[:12]} is not in the local image store ({self.directory})",
                hint="rebuild the image, or point BAKE_STATE_DIR at the state dir that holds it",
            )
        return target

    def set_ami(self, sha: str, ami: str) -> None:
        """Record that the AMI `ami` stands for the image with this digest."""
        if self.history.artifact(sha) is None:
            raise BakeError(f"image {sha[:12]} was never put into the local image store")
        self.history.set_artifact_ami(sha, ami)

    def ami(self, sha: str) -> str | None:
        record = self.history.artifact(sha)
        return record.ami if record else None

    def sha_for_ami(self, ami: str) -> str | None:
        record = self.history.artifact_for_ami(ami)
        return record.sha256 if record else None

    def remove(self, sha: str) -> None:
        """Delete a disk whose AMI was retired; its history record stays, without an AMI."""
        target = self._location(sha)
        if target.is_file():
            target.chmod(0o644)
            target.unlink()
        self.history.set_artifact_ami(sha, "")
