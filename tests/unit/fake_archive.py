"""A small Debian archive served over real HTTP on 127.0.0.1 and signed by a throwaway OpenPGP
key, which gpgv checks as it checks the real one: for the tests of the archive's indexes and of
the builds and plans that read them. The fixtures `signer` and `mirror` are in conftest.py."""

from __future__ import annotations

import functools
import gzip
import hashlib
import lzma
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bake.archive import Archive, suites_for
from bake.runner import Runner

COMPRESS = {".xz": lzma.compress, ".gz": gzip.compress, "": bytes}


@dataclass(frozen=True)
class Signer:
    """A throwaway signing key in its own GNUPGHOME, and its public key as a keyring file."""

    home: Path
    keyring: Path
    signed: dict[str, str] = field(default_factory=dict)  # tests publish the same text often

    def clearsign(self, text: str) -> str:
        if text not in self.signed:
            gpg = ["gpg", "--batch", "--clearsign"]
            self.signed[text] = (
                Runner().run(gpg, input=text, env={"GNUPGHOME": str(self.home)}).stdout
            )
        return self.signed[text]


class Server(ThreadingHTTPServer):
    """Serves a folder and notes every request; `conditional = False` makes it answer every
    GET in full, as some mirrors and proxies do."""

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.requests: list[tuple[str, int]] = []
        self.conditional = True


class Handler(SimpleHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        if not self.server.conditional:
            del self.headers["If-Modified-Since"]
        super().do_GET()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.server.requests.append((self.path, int(code)))


class Mirror:
    """A Debian archive in a folder: `publish` writes one suite's Packages index and signed
    InRelease, each publication dated 10 s after the last (If-Modified-Since has 1 s steps)."""

    def __init__(self, root: Path, server: Server, signer: Signer) -> None:
        self.root, self.server, self.signer = root, server, signer
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self.published_at = time.time() - 3600

    def publish(
        self,
        suite: str,
        packages: list[str],
        *,
        archive: str = "debian",
        compression: str = ".xz",
        by_hash: bool = False,
        valid_until: str = "",
        codename: str = "",
    ) -> Path:
        """`packages` are "NAME VERSION ARCH [SOURCE]" lines."""
        dists = self.root / archive / "dists" / suite
        index = f"main/binary-amd64/Packages{compression}"
        body = COMPRESS[compression](_packages_text(packages).encode())
        digest = hashlib.sha256(body).hexdigest()
        (dists / index).parent.mkdir(parents=True, exist_ok=True)
        (dists / index).write_bytes(body)
        if by_hash:
            (dists / "main/binary-amd64/by-hash/SHA256").mkdir(parents=True, exist_ok=True)
            (dists / "main/binary-amd64/by-hash/SHA256" / digest).write_bytes(body)
        fields = [
            "Origin: Test",
            f"Suite: {codename or suite}",
            f"Codename: {codename or suite}",
            "Date: Sat, 11 Jul 2026 10:16:37 UTC",
            *([f"Valid-Until: {valid_until}"] if valid_until else []),
            *(["Acquire-By-Hash: yes"] if by_hash else []),
            "Architectures: amd64",
            "Components: main",
            "SHA256:",
            f" {digest} {len(body)} {index}",
        ]
        inrelease = dists / "InRelease"
        inrelease.write_text(self.signer.clearsign("\n".join(fields) + "\n"))
        self.published_at += 10
        os.utime(inrelease, (self.published_at, self.published_at))
        return dists / index

    def archive(
        self, cache_dir: Path, *, max_age: float = 600, keyring: Path | None = None
    ) -> Archive:
        suites = suites_for("bookworm", f"{self.url}/debian", f"{self.url}/debian-security")
        return Archive(suites, cache_dir, keyring=keyring or self.signer.keyring, max_age=max_age)


def _packages_text(packages: list[str]) -> str:
    paragraphs = []
    for line in packages:
        name, version, architecture, *source = line.split(maxsplit=3)
        fields = [f"Package: {name}", f"Version: {version}", f"Architecture: {architecture}"]
        fields += [f"Source: {source[0]}"] if source else []
        paragraphs.append("\n".join([*fields, "Description: a test package", ""]))
    return "\n".join(paragraphs)


def make_signer(home: Path) -> Signer:
    """A new ed25519 signing key in `home` (a GNUPGHOME), exported as a keyring."""
    home.chmod(0o700)
    env = {"GNUPGHOME": str(home)}
    gpg = Runner()
    uid = "Test Archive <archive@example.invalid>"
    gpg.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519"], env=env)
    keyring = home / "archive-keyring.gpg"
    gpg.run(["gpg", "--batch", "--output", str(keyring), "--export"], env=env)
    return Signer(home, keyring)


def stop_signer(signer: Signer) -> None:
    Runner().run(["gpgconf", "--kill", "all"], env={"GNUPGHOME": str(signer.home)}, check=False)


@contextmanager
def serving(root: Path, signer: Signer) -> Iterator[Mirror]:
    """A mirror of the folder `root`, served until the block ends."""
    root.mkdir(exist_ok=True)
    server = Server(root)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Mirror(root, server, signer)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
