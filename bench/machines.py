"""What the local data plane's machines cost, how soon they serve, and swaps under load.

    .venv/bin/python bench/machines.py [--config bake.toml] [--service demo] [--state DIR]

1. Warms up (not timed): `bake bake-and-swap SERVICE`, reused when done; and when the standby
   colour does not serve the image yet, `bake bake-and-swap SERVICE --rebuild`, so that both
   colours run it (the second swap boots the machines whose boots are measured).
2. Each running machine: its QEMU's resident memory (VmRSS) and its CPU over 30 idle seconds.
3. Each machine started by the bench: seconds from QEMU's start to SSH and to healthy in its target
   group, from the supervisor's log.
4. `bake rollback SERVICE` and `bake swap SERVICE` under 20 requests a second through the
   service's URL: how long each took, how many requests, how many failed.

It bakes and boots real machines under QEMU: expect 10 to 20 minutes on 2 cores without KVM.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import REPO, arguments
from common import bake as run_bake

sys.path.insert(0, str(REPO))

from tests.e2e.load import Load  # noqa: E402  (the tests' bounded load, reused)

TICKS = os.sysconf("SC_CLK_TCK")
LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d) (i-[0-9a-f]+): (.*)$")


def bake(config: Path, state: Path, *args: str) -> Any:
    done = run_bake(config, state, "--json", *args, check=False)
    if done.returncode != 0:
        sys.exit(f"bake {' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def boot_times(log: Path, since: str) -> list[tuple[str, float | None, float | None]]:
    """(instance, seconds to SSH, seconds to healthy) of each machine started after `since`."""
    events: dict[str, dict[str, datetime]] = {}
    for line in log.read_text().splitlines():
        match = LOG_LINE.match(line)
        if not match or match[1] < since:
            continue
        at, instance, what = datetime.strptime(match[1], "%H:%M:%S"), match[2], match[3]
        if what.startswith("machine started"):
            events[instance] = {"started": at}
        elif instance in events and what.startswith("its machine is up"):
            events[instance].setdefault("ssh", at)
        elif instance in events and what.startswith("healthy in "):
            events[instance].setdefault("healthy", at)

    def after(entry: dict[str, datetime], key: str) -> float | None:
        return (entry[key] - entry["started"]).total_seconds() if key in entry else None

    return [(i, after(e, "ssh"), after(e, "healthy")) for i, e in events.items()]


def under_load(url: str, config: Path, state: Path, *args: str) -> tuple[float, int, int]:
    with Load(url, rate=20, seconds=1800) as load:
        time.sleep(3)
        started = time.monotonic()
        bake(config, state, *args)
        took = time.monotonic() - started
        time.sleep(3)
    return took, len(load.answers), len(load.failures())


def main() -> None:
    args = arguments(__doc__.splitlines()[0], service="demo")
    config, state, service = args.config, args.state, args.service

    since = time.strftime("%H:%M:%S")
    bake(config, state, "bake-and-swap", service)
    status = bake(config, state, "status", service)
    if not status["standby"] or status["standby"]["healthy"] < status["standby"]["desired"]:
        print("warming up: the standby does not serve yet; baking again so that both colours do")
        bake(config, state, "bake-and-swap", service, "--rebuild")
    local = bake(config, state, "local", "status")
    machines = [m for m in local["machines"] if m["service"] == service and m["pid"]]

    before = {m["pid"]: cpu_seconds(m["pid"]) for m in machines}
    time.sleep(30)
    idle = [100 * (cpu_seconds(pid) - seconds) / 30 for pid, seconds in before.items()]
    rss = [rss_mib(m["pid"]) for m in machines]
    print(f"machines of {service}: {len(machines)} running")
    print(
        f"  resident memory per QEMU: mean {statistics.mean(rss):.0f} MiB, max {max(rss):.0f} MiB"
    )
    print(f"  idle CPU per machine over 30 s: mean {statistics.mean(idle):.1f}% of a core, "
          f"max {max(idle):.1f}%")  # fmt: skip

    boots = boot_times(state / "local" / "supervisor.log", since)
    ssh = [seconds for _, seconds, _ in boots if seconds is not None]
    healthy = [seconds for _, _, seconds in boots if seconds is not None]
    if ssh:
        print(f"  start to SSH: {len(ssh)} boots, mean {statistics.mean(ssh):.0f} s, "
              f"max {max(ssh):.0f} s")  # fmt: skip
    if healthy:
        print(f"  start to healthy in its target group: mean {statistics.mean(healthy):.0f} s, "
              f"max {max(healthy):.0f} s")  # fmt: skip

    url = local["services"][service]["url"]
    for action in (("rollback", service), ("swap", service)):
        took, sent, failed = under_load(url, config, state, *action)
        print(f"bake {action[0]} {service} under 20 req/s: {took:.0f} s, {sent} requests, "
              f"{failed} failed")  # fmt: skip


if __name__ == "__main__":
    main()
