"""packer/scripts/patch.sh: apt's status lines become the progress lines the build shows (its awk
program, run here on what apt writes), and the script is valid shell. What it does to a machine
is proved by the end-to-end bakes and the base suite's build_leftovers checks."""

from __future__ import annotations

import re
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


def progress_program() -> str:
    text = SCRIPT.read_text(encoding="utf-8")
    match = re.search(r"\| awk -F: '(.*?)' 4>&-", text, re.DOTALL)
    assert match, "patch.sh filters apt's status lines through awk"
    return match.group(1)


def test_apts_status_becomes_progress_lines() -> None:
    shown = Runner().run(["awk", "-F:", progress_program()], input=APT_STATUS).stdout

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


def test_the_script_is_valid_shell() -> None:
    assert Runner().run(["sh", "-n", str(SCRIPT)], check=False).ok
