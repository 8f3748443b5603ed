"""The Debian archive's current indexes, read on the host: the updates an image's packages have.

The planner asks this without booting anything. Each suite's InRelease is fetched and checked with
gpgv; each Packages index it lists is downloaded only when its checksum changes, and kept as a
compact table (the highest version of each package, and its source), so a plan with nothing to do
answers in well under a second, again and again.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from debian import deb822
from debian.debian_support import Version, version_compare

from bake.errors import BakeError
from bake.packages import Package, Update
from bake.runner import Runner

log = logging.getLogger(__name__)

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MAX_AGE = 600.0  # seconds within which a refresh asks the archive nothing
HTTP_TIMEOUT = 60.0
# The forms of a Packages index apt understands, the one to prefer first.
DECOMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".xz": lzma.decompress,
    ".gz": gzip.decompress,
    "": bytes,
}
INDEX_FIELDS = ["Package", "Version", "Architecture", "Source"]
CACHE_VERSION = 1


@dataclass(frozen=True)
class Suite:
    """One suite of an archive, as a sources entry names it."""

    name: str
    uri: str
    components: tuple[str, ...] = ("main",)

    @property
    def url(self) -> str:
        return f"{self.uri.rstrip('/')}/dists/{self.name}"


def suites_for(suite: str, mirror: str, security_mirror: str) -> list[Suite]:
    """The suites packer/scripts/patch.sh gives the image: the release, -updates and -security."""
    return [
        Suite(suite, mirror),
        Suite(f"{suite}-updates", mirror),
        Suite(f"{suite}-security", security_mirror),
    ]


@dataclass(frozen=True)
class Response:
    """An HTTP answer: 200 with a body, or 304 (not modified) without one."""

    status: int
    body: bytes
    headers: Mapping[str, str]  # names in lower case


Fetch = Callable[[str, Mapping[str, str]], Response]


def http_get(url: str, headers: Mapping[str, str]) -> Response:
    """GET `url`; anything but 200 or 304 is a BakeError naming the URL."""
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
            return Response(answer.status, answer.read(), _lower(answer.headers.items()))
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Response(304, b"", _lower(exc.headers.items()))
        raise BakeError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except OSError as exc:  # URLError, a refused connection, a timeout
        raise BakeError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from exc


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in items}


@dataclass(frozen=True, order=True)
class Candidate:
    """The highest version of a binary package in one suite."""

    name: str
    architecture: str  # as the index has it: "all" stays "all"
    version: str
    suite: str
    source: str


@dataclass(frozen=True)
class Index:
    """A Packages index a verified InRelease lists, and the checksum it must have."""

    component: str
    architecture: str
    path: str  # below dists/SUITE, e.g. main/binary-amd64/Packages.xz
    sha256: str
    size: int


@dataclass(frozen=True)
class Checked:
    """What the last successful refresh of one suite learnt."""

    checked_at: float  # time.time() of that refresh
    inrelease_sha256: str
    date: str  # the InRelease's Date
    valid_until: str  # its Valid-Until, or ""
    etag: str
    last_modified: str  # the Last-Modified header, or the Date header when there is none
    indexes: tuple[Index, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checked:
        indexes = tuple(Index(**index) for index in data["indexes"])
        return cls(**{**data, "indexes": indexes})


@dataclass(frozen=True)
class Refreshed:
    """What a refresh did: the suites whose InRelease it asked for, the indexes it downloaded."""

    checked: tuple[str, ...]
    downloaded: tuple[str, ...]


class Archive:
    """The suites an image takes updates from, their indexes cached under `cache_dir`.

    Cache layout: `state.json` holds, for each suite URL, a `Checked`; `indexes/SHA256.json` holds
    one parsed Packages index (named by the sha256 of the file the InRelease lists) as sorted rows
    `[package, architecture, version, source]`, the highest version of each (package, arch).
    """

    def __init__(
        self,
        suites: Iterable[Suite],
        cache_dir: Path,
        *,
        architectures: Iterable[str] = ("amd64",),
        fetch: Fetch = http_get,
        keyring: Path = DEBIAN_KEYRING,
        max_age: float = MAX_AGE,
        runner: Runner | None = None,
    ) -> None:
        self.suites = list(suites)
        self.cache_dir = cache_dir
        self.architectures = tuple(architectures)
        self.fetch = fetch
        self.keyring = keyring
        self.max_age = max_age
        self.runner = runner or Runner()
        self._tables: list[tuple[str, dict[tuple[str, str], tuple[str, str]]]] | None = None

    @property
    def _state_path(self) -> Path:
        return self.cache_dir / "state.json"

    def _index_path(self, sha256: str) -> Path:
        return self.cache_dir / "indexes" / f"{sha256}.json"

    def refresh(self, *, force: bool = False) -> Refreshed:
        """Bring the cache up to date. A suite checked less than `max_age` ago is not asked again
        unless `force`; one asked again is asked with a conditional GET, and only the indexes whose
        checksum changed are downloaded."""
        state = self._read_state()
        checked: list[str] = []
        downloaded: list[str] = []
        for suite in self.suites:
            known = state.get(suite.url)
            if not force and known and self._fresh(known) and self._complete(suite, known):
                continue
            checked.append(suite.name)
            state[suite.url] = self._refresh_suite(suite, known, downloaded)
            self._write_state(state)
        self._prune(state)
        self._tables = None
        return Refreshed(tuple(checked), tuple(downloaded))

    def _fresh(self, known: Checked) -> bool:
        return 0 <= time.time() - known.checked_at < self.max_age

    def _complete(self, suite: Suite, known: Checked) -> bool:
        """Whether `known` lists every index this archive reads, each of them in the cache."""
        held = {(index.component, index.architecture) for index in known.indexes}
        wanted = all((c, a) in held for c in suite.components for a in self.architectures)
        return wanted and all(self._cached(index) for index in known.indexes)

    def _refresh_suite(self, suite: Suite, known: Checked | None, downloaded: list[str]) -> Checked:
        url = f"{suite.url}/InRelease"
        usable = known if known and self._complete(suite, known) else None
        response = self.fetch(url, _validators(usable))
        now = time.time()
        if response.status == 304 and usable:
            log.debug("%s: not modified", url)
            _check_valid_until(url, usable.valid_until)
            return replace(usable, checked_at=now)
        if response.status != 200:
            raise BakeError(f"cannot download {url}: HTTP {response.status}")
        release = self._verify(url, response.body)
        if suite.name not in (release.get("Codename"), release.get("Suite")):
            raise BakeError(
                f"{url} is signed for suite {release.get('Codename') or '?'}, not {suite.name}"
            )
        _check_valid_until(url, release.get("Valid-Until", ""))
        indexes = _listed_indexes(suite, self.architectures, url, release)
        by_hash = release.get("Acquire-By-Hash", "").lower() == "yes"
        for index in indexes:
            if self._cached(index):
                continue
            index_url = _index_url(suite, index, by_hash)
            self._store(index, _parse_index(self._download(index_url, index)))
            downloaded.append(index_url)
        return Checked(
            checked_at=now,
            inrelease_sha256=hashlib.sha256(response.body).hexdigest(),
            date=release.get("Date", ""),
            valid_until=release.get("Valid-Until", ""),
            etag=response.headers.get("etag", ""),
            last_modified=response.headers.get("last-modified") or response.headers.get("date", ""),
            indexes=indexes,
        )

    def _verify(self, url: str, body: bytes) -> deb822.Release:
        """The part of a clearsigned InRelease that gpgv verified with the keyring, parsed."""
        if not self.keyring.is_file():
            raise BakeError(
                f"OpenPGP keyring {self.keyring} does not exist",
                hint="install debian-archive-keyring, or name another keyring",
            )
        result = self.runner.run(
            ["gpgv", "--keyring", str(self.keyring.resolve()), "--output", "-", "-"],
            input=body.decode("utf-8", errors="replace"),
            check=False,
            timeout=HTTP_TIMEOUT,
        )
        if not result.ok:
            lines = result.stderr.strip().splitlines()
            raise BakeError(
                f"{url}: the OpenPGP signature does not verify with {self.keyring}"
                + (f" ({lines[-1]})" if lines else ""),
                hint="a mirror serving altered files, or a keyring too old for the archive's keys",
            )
        return deb822.Release(result.stdout)

    def _download(self, url: str, index: Index) -> bytes:
        """The index at `url`, decompressed, once its size and sha256 are those InRelease signs."""
        body = self.fetch(url, {}).body
        if len(body) != index.size:
            raise BakeError(
                f"{url}: {len(body)} bytes, the signed InRelease says {index.size}",
                hint="the mirror may be mid-update; try again in a few minutes",
            )
        digest = hashlib.sha256(body).hexdigest()
        if digest != index.sha256:
            raise BakeError(
                f"{url}: sha256 {digest} does not match the signed InRelease ({index.sha256})",
                hint="the mirror may be mid-update; try again in a few minutes",
            )
        suffix = next((s for s in DECOMPRESSORS if s and index.path.endswith(s)), "")
        try:
            return DECOMPRESSORS[suffix](body)
        except (lzma.LZMAError, OSError, EOFError) as exc:
            raise BakeError(f"{url}: cannot decompress: {exc}") from exc

    def _cached(self, index: Index) -> bool:
        return self._index_path(index.sha256).is_file()

    def _store(self, index: Index, rows: list[list[str]]) -> None:
        _write_atomically(self._index_path(index.sha256), json.dumps(rows, separators=(",", ":")))

    def _prune(self, state: dict[str, Checked]) -> None:
        """Remove the parsed indexes no suite lists any more."""
        wanted = {index.sha256 for checked in state.values() for index in checked.indexes}
        for path in (self.cache_dir / "indexes").glob("*.json"):
            if path.stem not in wanted:
                path.unlink(missing_ok=True)

    def _read_state(self) -> dict[str, Checked]:
        try:
            data = json.loads(self._state_path.read_text(encoding="utf-8"))
            if data.get("version") != CACHE_VERSION:
                return {}
            return {url: Checked.from_dict(entry) for url, entry in data["suites"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # no cache yet, or one this code cannot read: refresh rebuilds it

    def _write_state(self, state: dict[str, Checked]) -> None:
        data = {"version": CACHE_VERSION, "suites": {u: asdict(c) for u, c in state.items()}}
        _write_atomically(self._state_path, json.dumps(data, indent=1, sort_keys=True))

    def _load(self) -> list[tuple[str, dict[tuple[str, str], tuple[str, str]]]]:
        """Each cached index as (suite name, {(package, architecture): (version, source)})."""
        if self._tables is not None:
            return self._tables
        state = self._read_state()
        tables = []
        for suite in self.suites:
            known = state.get(suite.url)
            if known is None or not self._complete(suite, known):
                raise BakeError(
                    f"the indexes of {suite.url} have not been fetched",
                    hint="refresh the archive first",
                )
            for index in known.indexes:
                rows = json.loads(self._index_path(index.sha256).read_bytes())
                tables.append((suite.name, {(n, a): (v, source) for n, a, v, source in rows}))
        self._tables = tables
        return tables

    def offers(self, name: str, architecture: str) -> list[Candidate]:
        """Each suite's highest version of a package, newest first (on a tie the later suite,
        so a security fix folded into a point release still reads as one). Architecture "all" and
        the native (first) architecture are one package, as apt treats them."""
        native = self.architectures[0]
        same = (native, "all") if architecture in (native, "all") else (architecture,)
        found = set()
        for suite, table in self._load():
            for arch in same:
                if (name, arch) in table:
                    version, source = table[(name, arch)]
                    found.add(Candidate(name, arch, version, suite, source))
        rank = {suite.name: position for position, suite in enumerate(self.suites)}
        return sorted(found, key=lambda c: (Version(c.version), rank[c.suite]), reverse=True)

    def candidate(self, name: str, architecture: str) -> Candidate | None:
        """The newest version of a package in any suite: what an upgrade would install."""
        offers = self.offers(name, architecture)
        return offers[0] if offers else None

    def candidates(
        self, names_and_architectures: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], Candidate]:
        """`candidate` for many packages; those the archive does not have are left out."""
        found = {key: self.candidate(*key) for key in names_and_architectures}
        return {key: candidate for key, candidate in found.items() if candidate}

    def pending(self, packages: Iterable[Package]) -> list[Update]:
        """The installed packages the archive has a newer version of, sorted."""
        updates = []
        for package in packages:
            newest = self.candidate(package.name, package.architecture)
            if newest and version_compare(newest.version, package.version) > 0:
                updates.append(
                    Update(
                        package.name,
                        package.architecture,
                        package.version,
                        newest.version,
                        newest.suite,
                        newest.source,
                    )
                )
        return sorted(updates)


def updates_digest(updates: Iterable[Update]) -> str:
    """A sha256 of the updates (name, architecture, installed, candidate, suite), in any order."""
    rows = sorted((u.name, u.architecture, u.installed, u.candidate, u.suite) for u in updates)
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def _validators(known: Checked | None) -> dict[str, str]:
    """The headers of a conditional GET of an InRelease fetched before."""
    headers = {}
    if known and known.etag:
        headers["If-None-Match"] = known.etag
    if known and known.last_modified:
        headers["If-Modified-Since"] = known.last_modified
    return headers


def _check_valid_until(url: str, valid_until: str) -> None:
    """An InRelease past its Valid-Until is a stale (or replayed) archive: apt refuses it too."""
    if not valid_until:
        return
    try:
        expires = parsedate_to_datetime(valid_until).timestamp()
    except (TypeError, ValueError) as exc:
        raise BakeError(f"{url} has an unreadable Valid-Until: {valid_until}") from exc
    if expires < time.time():
        raise BakeError(
            f"{url} expired on {valid_until}",
            hint="the mirror has stopped updating; use another",
        )


def _listed_indexes(
    suite: Suite, architectures: tuple[str, ...], url: str, release: deb822.Release
) -> tuple[Index, ...]:
    """The Packages index of each component and architecture, in the first form listed."""
    listed = {entry["name"]: entry for entry in release.get("SHA256", [])}
    indexes = []
    for component in suite.components:
        for architecture in architectures:
            stem = f"{component}/binary-{architecture}/Packages"
            path = next((stem + s for s in DECOMPRESSORS if stem + s in listed), None)
            if path is None:
                raise BakeError(
                    f"{url} lists no {stem} index",
                    hint="check the suite's components and architectures",
                )
            entry = listed[path]
            indexes.append(
                Index(component, architecture, path, entry["sha256"].lower(), int(entry["size"]))
            )
    return tuple(indexes)


def _index_url(suite: Suite, index: Index, by_hash: bool) -> str:
    """Where to download an index: by its hash when the archive offers that, so a mirror that
    is mid-update still serves the file this InRelease signs."""
    if by_hash:
        folder = index.path.rpartition("/")[0]
        return f"{suite.url}/{folder}/by-hash/SHA256/{index.sha256}"
    return f"{suite.url}/{index.path}"


def _parse_index(data: bytes) -> list[list[str]]:
    """Rows `[package, architecture, version, source]`, the highest version of each (package,
    architecture) in a Packages index, sorted."""
    newest: dict[tuple[str, str], tuple[str, str]] = {}
    paragraphs = deb822.Packages.iter_paragraphs(
        io.BytesIO(data), fields=INDEX_FIELDS, use_apt_pkg=False
    )
    for paragraph in paragraphs:
        name, version = paragraph.get("Package"), paragraph.get("Version")
        architecture = paragraph.get("Architecture")
        if not (name and version and architecture):
            continue
        held = newest.get((name, architecture))
        if held is None or version_compare(version, held[0]) > 0:
            newest[(name, architecture)] = (version, paragraph.source or name)
    return sorted(
        [name, arch, version, source] for (name, arch), (version, source) in newest.items()
    )


def _write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader (another bake on the same cache) sees all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
