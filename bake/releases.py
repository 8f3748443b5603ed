"""Releases: the application a service runs on its image, shipped without baking a new image.

A release is a tar.gz of the application, kept in the service's release store (`[services.NAME]
releases = "s3://BUCKET/PREFIX"`; the local target's cloud has a bucket of its own) as
`PREFIX/SERVICE/VERSION.tar.gz`, with its sha256. A launch template version names it in its user
data: a small JSON document (`Release.document`), alone, or as a part of its own beside the user
data the version already had (MIME multipart, which cloud-init reads as it read the original).
An image's `pull-deploy` step reads it from the instance metadata at boot, downloads the release,
checks its sha256, installs and starts it, and only then lets the health check pass.

Releases are immutable: a version stored once keeps its content. The releases of each service are
listed in the history database (`bake history --releases`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import posixpath
import re
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bake.errors import InputError
from bake.tables import HistoryTable

if TYPE_CHECKING:
    from email.message import Message

    from bake.config import Config, ServiceConfig

# A swap reads the release a launch template names (bluegreen.describe), so tarfile, gzip and the
# MIME classes are imported where a release is packed or written, not with this module.

# The content type of the release's part of multipart user data, and the key of the document.
PART_TYPE = "text/x-goldenbake-release"
DOCUMENT_KEY = "goldenbake-release"
# At most 40 characters: a rollout record (a load balancer tag of at most 256) holds two.
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,39}$")
# The local target keeps releases in a bucket of its own cloud.
LOCAL_STORE = "s3://goldenbake-releases"
# What cloud-init makes of user data by its first line, for a part of multipart user data.
CLOUD_INIT_TYPES = (
    ("#!", "text/x-shellscript"),
    ("#cloud-config", "text/cloud-config"),
    ("#include", "text/x-include-url"),
    ("#cloud-boothook", "text/cloud-boothook"),
    ("#upstart-job", "text/upstart-job"),
    ("#part-handler", "text/part-handler"),
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    location TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (service, version)
);
"""


@dataclass(frozen=True)
class Release:
    """One stored release of a service: where it is, what its content must hash to, and (on the
    local target) the address its machines reach the store at."""

    service: str
    version: str
    sha256: str
    size: int
    location: str  # s3://BUCKET/KEY
    endpoint: str | None = None

    def document(self) -> dict[str, Any]:
        """What the user data says, and the machine's pull-deploy reads."""
        named = {
            "service": self.service,
            "version": self.version,
            "url": self.location,
            "sha256": self.sha256,
            "size": self.size,
        }
        if self.endpoint:
            named["endpoint"] = self.endpoint
        return {DOCUMENT_KEY: named}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_version(version: str) -> str:
    if not VERSION.match(version):
        raise InputError(
            f"release version '{version}' is not usable",
            hint="use letters, digits, '.', '_', '+' and '-', starting with a letter or digit, "
            "at most 40 characters (for example 1.4.2 or 2026-12-07.1)",
        )
    return version


def check_image_pulls(config: Config, service: ServiceConfig) -> None:
    """A release reaches a service's machines only through its image's pull-deploy step."""
    image = config.image(service.image)
    if not any(step.kind == "pull-deploy" for step in image.steps):
        raise InputError(
            f"service {service.name} runs image {image.name}, which has no pull-deploy step: its "
            "machines would not install a release",
            hint=f"add {{ pull-deploy = {{ ... }} }} to images.{image.name}.steps and bake it",
        )


def store_key(store: str, service: str, version: str) -> tuple[str, str]:
    """The bucket and key of a release in a store `s3://BUCKET[/PREFIX]`."""
    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    return bucket, "/".join(part for part in (prefix, service, f"{version}.tar.gz") if part)


# packing


@dataclass(frozen=True)
class Packed:
    """A release's archive, ready to store."""

    data: bytes
    sha256: str
    files: int

    @property
    def size(self) -> int:
        return len(self.data)


def pack(path: Path) -> Packed:
    """A directory as a tar.gz whose bytes depend on its files alone (names, contents, modes), or
    a given .tar.gz as it is, once its members are checked."""
    if not path.exists():
        raise InputError(f"{path} does not exist", hint="give a directory or a .tar.gz")
    if path.is_dir():
        data = _pack_directory(path)
    elif path.name.endswith((".tar.gz", ".tgz")):
        data = path.read_bytes()
    else:
        raise InputError(
            f"{path} is neither a directory nor a .tar.gz", hint="give a directory or a .tar.gz"
        )
    files = _check_archive(data, path)
    return Packed(data, hashlib.sha256(data).hexdigest(), files)


def _pack_directory(root: Path) -> bytes:
    import gzip
    import tarfile

    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            info = archive.gettarinfo(str(path), arcname=relative)
            if not (info.isfile() or info.isdir() or info.issym()):
                raise InputError(
                    f"{path} is neither a file, a directory nor a symbolic link",
                    hint="a release holds files and folders only",
                )
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
            if info.isfile():
                with path.open("rb") as content:
                    archive.addfile(info, content)
            else:
                archive.addfile(info)
    return buffer.getvalue()


def _check_archive(data: bytes, path: Path) -> int:
    """The number of files of a release archive whose every member stays inside it."""
    import tarfile

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = archive.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{path} is not a readable tar.gz: {exc}") from None
    for member in members:
        name = member.name
        outside = name.startswith("/") or ".." in Path(name).parts
        link_outside = member.issym() and (
            member.linkname.startswith("/")
            or posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname)).split(
                "/"
            )[0]
            == ".."
        )
        if outside or link_outside or not (member.isfile() or member.isdir() or member.issym()):
            raise InputError(
                f"{path}: member '{name}' would land outside the release, or is not a plain "
                "file, folder or relative link",
                hint="pack the application's folder as it is installed",
            )
    if not any(member.isfile() for member in members):
        raise InputError(f"{path} holds no file", hint="give the application's folder")
    return sum(1 for member in members if member.isfile())


# user data


def named_in(user_data: str | None) -> dict[str, Any] | None:
    """The release document a launch template version's user data (base64) names, or None."""
    raw = _decoded(user_data)
    if raw is None:
        return None
    document = _document(raw)
    if document is not None:
        return document
    message = _multipart(raw)
    if message is None:
        return None
    for part in message.walk():
        if part.get_content_type() == PART_TYPE:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return _document(payload)
    return None


def user_data_for(release: Release, existing: str | None) -> str:
    """The user data (base64) that names `release`, keeping what `existing` says besides the
    release it may name."""
    from email.mime.base import MIMEBase
    from email.mime.multipart import MIMEMultipart

    ours = json.dumps(release.document(), sort_keys=True).encode()
    foreign = _foreign_parts(_decoded(existing))
    if not foreign:
        return base64.b64encode(ours).decode()
    combined = MIMEMultipart(boundary="goldenbake-release-boundary")
    for part in foreign:
        combined.attach(part)
    part = MIMEBase(*PART_TYPE.split("/"))
    part.set_payload(ours.decode())
    combined.attach(part)
    return base64.b64encode(combined.as_bytes()).decode()


def _decoded(user_data: str | None) -> bytes | None:
    if not user_data:
        return None
    try:
        return base64.b64decode(user_data, validate=True)
    except ValueError:
        return None


def _document(raw: bytes) -> dict[str, Any] | None:
    if not raw.lstrip().startswith(b"{"):
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    named = parsed.get(DOCUMENT_KEY) if isinstance(parsed, dict) else None
    return named if isinstance(named, dict) else None


def _multipart(raw: bytes) -> Message | None:
    if not raw.lstrip().lower().startswith((b"content-type:", b"mime-version:")):
        return None
    from email import message_from_bytes

    message = message_from_bytes(raw)
    return message if message.is_multipart() else None


def _foreign_parts(raw: bytes | None) -> list[Message]:
    """The parts of user data that are not a release's, as parts of multipart user data."""
    from email.message import Message
    from email.mime.base import MIMEBase

    if raw is None or _document(raw) is not None:
        return []
    message = _multipart(raw)
    if message is not None:
        return [
            part
            for part in message.get_payload()
            if isinstance(part, Message) and part.get_content_type() != PART_TYPE
        ]
    if raw[:2] == b"\x1f\x8b":
        raise InputError(
            "the launch template's user data is gzip-compressed; a release cannot be added to it",
            hint="give the launch template uncompressed user data (or none: bake the bootstrap "
            "into the image)",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            "the launch template's user data is not text; a release cannot be added to it",
            hint="bake the bootstrap into the image, or give text user data",
        ) from None
    kind = next((kind for start, kind in CLOUD_INIT_TYPES if text.startswith(start)), "text/plain")
    part = MIMEBase(*kind.split("/"))
    part.set_payload(text)
    return [part]


# the releases a state directory knows


class ReleaseBook(HistoryTable):
    """The releases of one state directory's history database."""

    SCHEMA = SCHEMA

    def record(self, release: Release, run_id: str) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO releases (service, version, sha256, size, location, run_id, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(service, version) DO NOTHING",
                (
                    release.service,
                    release.version,
                    release.sha256,
                    release.size,
                    release.location,
                    run_id,
                    datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # as history's times
                ),
            )

    def listed(self, service: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The releases, newest first, of one service or of all."""
        where, params = ("WHERE service = ?", (service,)) if service else ("", ())
        with closing(self._connect()) as db:
            rows = db.execute(
                f"SELECT service, version, sha256, size, location, run_id, created FROM releases "
                f"{where} ORDER BY created DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [dict(row) for row in rows]
