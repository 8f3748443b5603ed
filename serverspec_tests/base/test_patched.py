"""The OS patch step's promise: the newest kernel runs, and nothing from -security is pending."""

from __future__ import annotations

from bake import archive, freshness
from bake.errors import BakeError
from bake.packages import DPKG_QUERY, parse_dpkg_query
from bake.state import StateDir

# apt itself reads the machine's sources (no network, no index downloaded yet): a line per
# Packages index it would fetch.
INDEX_TARGETS = (
    "apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE) $(COMPONENT)'"
    " 'Created-By: Packages'"
)


def test_running_kernel_is_the_newest_installed(host):
    running = host.run("uname -r").stdout.strip()
    installed = host.check_output("linux-version list | linux-version sort")
    newest = installed.splitlines()[-1].strip()
    assert running == newest, f"running {running}, newest installed {newest}"


def machine_suites(host) -> list[archive.Suite]:
    """The suites the machine's apt takes packages from, as apt parses its sources."""
    components: dict[tuple[str, str], list[str]] = {}
    for line in host.check_output(INDEX_TARGETS).splitlines():
        uri, release, component = line.split()
        components.setdefault((uri, release), []).append(component)
    return [
        archive.Suite(release, uri, tuple(sorted(set(names))))
        for (uri, release), names in sorted(components.items())
    ]


def test_no_security_updates_pending(host, archive_access):
    """The machine's packages against what its own sources offer now. Through `bake verify` the
    host reads the archive's signed indexes (the cache every bake shares); run by hand, or when
    the host cannot read them, the machine's apt asks the archive itself."""
    suites = machine_suites(host)
    assert any(suite.name.endswith("-security") for suite in suites), suites
    if archive_access is not None:
        state = StateDir(archive_access.state_dir)
        try:
            indexes = freshness.open_archive(state, suites, archive_access.keyring)
        except BakeError as exc:
            print(f"the host cannot read the archive ({exc.message}); asking the machine")
        else:
            installed = parse_dpkg_query(host.check_output(DPKG_QUERY))
            pending = [u for u in indexes.pending(installed) if u.suite.endswith("-security")]
            assert pending == []
            return
    with host.sudo():
        update = host.run("apt-get update -q -o Acquire::Languages=none")
    assert update.rc == 0, update.stderr
    simulated = host.check_output("apt-get -s -o APT::Install-Recommends=false dist-upgrade")
    pending_lines = [
        line
        for line in simulated.splitlines()
        if line.startswith("Inst ") and ("Debian-Security" in line or "-security" in line)
    ]
    assert pending_lines == []


def test_release_updates_and_security_suites_are_configured(host):
    names = {suite.name for suite in machine_suites(host)}
    assert {"bookworm", "bookworm-updates", "bookworm-security"} <= names
    sources = host.file("/etc/apt/sources.list.d/debian.sources")
    assert sources.exists
    for line in sources.content_string.splitlines():
        if line.startswith("Signed-By:"):
            assert host.file(line.split(":", 1)[1].strip()).is_file
