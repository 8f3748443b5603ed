"""packer/scripts/patch.sh: apt's status lines become the progress lines the build shows (its
`show_progress` function, run here on what apt writes), each as soon as apt writes it, and the
script is valid shell. What it does to a machine is proved by the end-to-end bakes and the base
suite's build_leftovers checks."""

from __future__ import annotations

import os
import re
import select
import subprocess
from pathlib import Path

from bake.runner import Runner

SCRIPT = Path(__file__).resolve().parents[2] / "packer" / "scripts" / "patch.sh"

# What `apt-get -o APT::Status-Fd=3 dist-upgrade` writes to fd 3, shortened.
APT_STATUS = """\
dlstatus:1:0.0000:Retrieving file 1 of 3
dlstatus:1:0.0000:Retrieving file 1 of 3
dlstatus:2:54.5944:Retrieving file 2 of 3
dlstatus:3:100.0000:Retrieving file 3 of 3
pmstatus:dpkg-exec:0.0000:Running dpkg
pmstatus:libssl3:0.0000:Preparing libssl3 (amd64)
pmstatus:libssl3:7.6923:Unpacking libssl3 (amd64)
pmstatus:libssl3:15.3846:Installing libssl3 (amd64)
pmstatus:linux-image-6.1.0-57-cloud-amd64:23.0769:Unpacking linux-image-6.1.0-57-cloud-amd64 (amd64)
pmstatus:tzdata:30.7692:Unpacking tzdata (all)
pmstatus:libssl3:46.1538:Preparing to configure libssl3 (amd64)
pmstatus:libssl3:53.8462:Configuring libssl3 (amd64)
pmstatus:libssl3:61.5385:Installed libssl3 (amd64)
pmstatus:linux-image-6.1.0-57-cloud-amd64:69.2308:Configuring linux-image-6.1.0-57-cloud-a\
md64 (amd64)
pmstatus:libc-bin:92.3077:Running post-installation trigger libc-bin
"""


def progress_command() -> list[str]:
    """`sh -c` running patch.sh's `show_progress` on its standard input."""
    text = SCRIPT.read_text(encoding="utf-8")
    match = re.search(r"^show_progress\(\) \(\n.*?^\)$", text, re.DOTALL | re.MULTILINE)
    assert match, "patch.sh filters apt's status lines through its show_progress function"
    return ["sh", "-euc", f"{match.group(0)}\nshow_progress"]


def test_apts_status_becomes_progress_lines() -> None:
    shown = Runner().run(progress_command(), input=APT_STATUS).stdout

    assert shown.splitlines() == [
        "bake-progress: downloading: Retrieving file 1 of 3",
        "bake-progress: downloading: Retrieving file 2 of 3",
        "bake-progress: downloading: Retrieving file 3 of 3",
        "bake-progress: unpacking libssl3 (1 of 3)",
        "bake-progress: unpacking linux-image-6.1.0-57-cloud-amd64 (2 of 3)",
        "bake-progress: unpacking tzdata (3 of 3)",
        "bake-progress: configuring libssl3 (1 of 3)",
        "bake-progress: configuring linux-image-6.1.0-57-cloud-amd64 (2 of 3)",
        "bake-progress: trigger libc-bin",
    ]


def read_line(fd: int, timeout: float) -> str:
    """One line from `fd`, or what arrived before `timeout` seconds passed without a newline."""
    got = b""
    while not got.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            break
        chunk = os.read(fd, 1)
        if not chunk:
            break
        got += chunk
    return got.decode()


def test_each_progress_line_leaves_before_apt_writes_its_next_status() -> None:
    """apt writes its status lines over minutes: each progress line must be shown when its status
    line comes, not when a buffer fills or apt ends."""
    steps = [
        ("dlstatus:1:0.0000:Retrieving file 1 of 2", "downloading: Retrieving file 1 of 2"),
        ("pmstatus:libssl3:7.6923:Unpacking libssl3 (amd64)", "unpacking libssl3 (1 of 2)"),
        ("pmstatus:tzdata:30.7692:Unpacking tzdata (all)", "unpacking tzdata (2 of 2)"),
        ("pmstatus:libssl3:53.8462:Configuring libssl3 (amd64)", "configuring libssl3 (1 of 2)"),
        ("pmstatus:man-db:92.3:Running post-installation trigger man-db", "trigger man-db"),
    ]
    process = subprocess.Popen(
        progress_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )
    assert process.stdin is not None and process.stdout is not None
    shown = []
    try:
        for status, _ in steps:
            process.stdin.write(f"{status}\n".encode())
            shown.append(read_line(process.stdout.fileno(), timeout=10))
    finally:
        process.stdin.close()
        process.wait(timeout=10)
        process.stdout.close()

    assert shown == [f"bake-progress: {expected}\n" for _, expected in steps]
    assert process.returncode == 0


def test_the_script_is_valid_shell() -> None:
    assert Runner().run(["sh", "-n", str(SCRIPT)], check=False).ok
