"""Service machines: the QEMU command line and metadata a machine boots with, its record, its
adoption by a restarted supervisor, and how it is stopped. QEMU is stood in for: by the fake runner
where only the command line matters, by a sleeping process whose command line names QEMU and the
instance where a live process is needed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bake.config import LocalSettings
from bake.history import History
from bake.local import imds, machines
from bake.local.machines import Fleet, Instance, Machine
from bake.local.store import ImageStore
from bake.state import StateDir
from tests.unit.fakes import FakeRunner

AMI = "ami-0123456789abcdef0"


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state").ensure()


@pytest.fixture
def store(state: StateDir) -> ImageStore:
    store = ImageStore(state.store, History(state.history_db))
    disk = state.root / "web.qcow2"
    disk.write_bytes(b"a disk")
    store.set_ami(store.put(disk, "web"), AMI)
    return store


def fleet_of(state: StateDir, store: ImageStore, runner=None, log=None) -> Fleet:
    return Fleet(
        runner or FakeRunner(),
        state,
        LocalSettings(machine_memory=320, machine_cpus=1),
        store,
        accelerator="tcg",
        key=state.ssh / "id_ed25519",
        region="us-east-1",
        python="/venv/bin/python",
        log=log or (lambda line: None),
    )


def instance(instance_id: str = "i-0aaaaaaaaaaaaaaa1", ami: str = AMI, **extra) -> Instance:
    return Instance(instance_id, "demo", "green", ami, **extra)


@pytest.fixture
def stand_in() -> Iterator:
    """Start sleeping processes whose command lines read as a QEMU of an instance."""
    started: list[subprocess.Popen] = []

    def start(instance_id: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)", "qemu-system-x86_64",
             instance_id],
            start_new_session=True,
        )  # fmt: skip
        started.append(process)
        cmdline = Path(f"/proc/{process.pid}/cmdline")
        deadline = time.monotonic() + 10
        while b"qemu-system" not in cmdline.read_bytes():  # until the child has exec'd
            assert time.monotonic() < deadline, "the stand-in did not start"
            time.sleep(0.01)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_machine_boots_an_overlay_of_its_amis_disk_with_its_ports_and_metadata(
    state, store
) -> None:
    runner = FakeRunner()
    fleet = fleet_of(state, store, runner)
    wanted = instance(user_data=b"#!/bin/sh\necho hi\n", http_tokens="required")

    machine = fleet.start(wanted)

    assert machine.state == "booting" and machine.pid == 4242
    directory = state.local / "machines" / wanted.instance_id
    (overlay,) = runner.commands("qemu-img")
    assert overlay[-3:] == [
        "-b", str(store.path(store.sha_for_ami(AMI) or "").resolve()), str(directory / "disk.qcow2")
    ]  # fmt: skip
    (qemu,) = runner.commands("qemu-system-x86_64")
    assert qemu[qemu.index("-accel") + 1] == f"tcg,tb-size={machines.TB_SIZE}"
    assert qemu[qemu.index("-smp") + 1] == "1" and qemu[qemu.index("-m") + 1] == "320"
    netdev = qemu[qemu.index("-netdev") + 1]
    assert f"hostfwd=tcp:127.0.0.1:{machine.ssh_port}-:22" in netdev
    assert f"hostfwd=tcp:127.0.0.1:{machine.http_port}-:80" in netdev
    assert "net=169.254.0.0/16" in netdev
    logs = state.local / "logs" / wanted.instance_id
    assert netdev.endswith(
        f",guestfwd=tcp:169.254.169.254:80-cmd:/venv/bin/python -m bake.local.imds "
        f"{directory / 'metadata.json'}"
        f",guestfwd=tcp:169.254.169.253:514-cmd:/venv/bin/python -m bake.local.logsink {logs}"
    )
    assert machine.logs == str(logs) and logs.is_dir()
    document = imds.read_document(directory / "metadata.json")
    assert (document.instance_id, document.ami_id) == (wanted.instance_id, AMI)
    assert document.user_data == b"#!/bin/sh\necho hi\n"
    assert document.http_tokens == "required"
    (recorded,) = machines.read_records(state)
    assert recorded == machine


def test_an_ami_without_a_local_disk_is_a_failed_machine_and_nothing_starts(state, store) -> None:
    runner = FakeRunner()
    lines: list[str] = []
    fleet = fleet_of(state, store, runner, lines.append)
    machine = fleet.start(instance(ami="ami-0ffffffffffffffff"))

    assert machine.state == "failed" and machine.pid is None
    assert "ami-0ffffffffffffffff has no disk in the local image store" in machine.error
    assert runner.calls == []
    assert lines and "cannot start its machine" in lines[0]
    assert machines.read_records(state)[0].state == "failed"


def test_a_restarted_supervisor_adopts_live_machines_and_forgets_dead_ones(
    state, store, stand_in
) -> None:
    alive = stand_in("i-0aaaaaaaaaaaaaaa1")
    directory = state.local / "machines"
    for name in ("i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2"):
        (directory / name).mkdir(parents=True)
        (directory / name / "disk.qcow2").write_bytes(b"overlay")
        (directory / name / "console.log").write_text("login:")
    records = [
        Machine("i-0aaaaaaaaaaaaaaa1", "demo", "blue", AMI, str(directory / "i-0aaaaaaaaaaaaaaa1"),
                pid=alive.pid, ssh_port=1, http_port=2, state="running"),
        Machine("i-0bbbbbbbbbbbbbbb2", "demo", "blue", AMI, str(directory / "i-0bbbbbbbbbbbbbbb2"),
                pid=999_999_99, ssh_port=3, http_port=4, state="running"),
        Machine("i-0ccccccccccccccc3", "demo", "blue", "ami-1", str(directory / "x"),
                state="failed", error="no disk"),
    ]  # fmt: skip
    (state.local / "machines.json").write_text(json.dumps([m.to_dict() for m in records]))
    fleet = fleet_of(state, store)

    fleet.load()

    assert set(fleet.machines) == {"i-0aaaaaaaaaaaaaaa1", "i-0ccccccccccccccc3"}
    assert fleet.machines["i-0aaaaaaaaaaaaaaa1"].state == "running"
    assert not (directory / "i-0bbbbbbbbbbbbbbb2").exists()
    kept = directory / "terminated" / "i-0bbbbbbbbbbbbbbb2.console.log"
    assert kept.read_text() == "login:"
    assert {m.instance_id for m in machines.read_records(state)} == set(fleet.machines)
    assert machines.memory_of(machines.read_records(state), fleet.settings) == (
        320 + machines.QEMU_OVERHEAD
    ), "only the live machine holds memory"


def test_a_machine_whose_qemu_exits_is_dead(state, store, stand_in) -> None:
    lines: list[str] = []
    fleet = fleet_of(state, store, log=lines.append)
    process = stand_in("i-0aaaaaaaaaaaaaaa1")
    fleet.machines["i-0aaaaaaaaaaaaaaa1"] = Machine(
        "i-0aaaaaaaaaaaaaaa1", "demo", "blue", AMI, str(state.local / "m"), pid=process.pid,
        ssh_port=1, http_port=2,
    )  # fmt: skip
    assert fleet.refresh() == []
    process.kill()
    process.wait()

    (died,) = fleet.refresh()

    assert died.state == "dead"
    assert any("its machine exited" in line for line in lines)
    assert machines.read_records(state)[0].state == "dead"


def test_stopping_a_machine_that_does_not_answer_ssh_terminates_it_and_removes_its_disk(
    state, store, stand_in
) -> None:
    fleet = fleet_of(state, store)
    process = stand_in("i-0aaaaaaaaaaaaaaa1")
    directory = state.local / "machines" / "i-0aaaaaaaaaaaaaaa1"
    directory.mkdir(parents=True)
    (directory / "disk.qcow2").write_bytes(b"overlay")
    fleet.machines["i-0aaaaaaaaaaaaaaa1"] = Machine(
        "i-0aaaaaaaaaaaaaaa1", "demo", "blue", AMI, str(directory), pid=process.pid,
        ssh_port=9, http_port=2,
    )  # fmt: skip
    started = time.monotonic()

    fleet.stop("i-0aaaaaaaaaaaaaaa1")

    assert process.wait(timeout=5) is not None
    assert time.monotonic() - started < machines.KILL_GRACE + 2
    assert fleet.machines == {} and machines.read_records(state) == []
    assert not directory.exists()


def test_ssh_answers_only_when_sshd_greets(tmp_path) -> None:
    import socket
    import threading

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def greet(banner: bytes) -> None:
            conn, _ = server.accept()
            conn.sendall(banner)
            conn.close()

        thread = threading.Thread(target=greet, args=(b"SSH-2.0-OpenSSH_9.2\r\n",))
        thread.start()
        assert machines.ssh_answers(port)
        thread.join()
        thread = threading.Thread(target=greet, args=(b"",))
        thread.start()
        assert not machines.ssh_answers(port), "QEMU accepts and closes before the guest listens"
        thread.join()


def test_what_a_machine_shipped_stays_after_it_is_stopped_or_forgotten(
    state, store, stand_in
) -> None:
    """The point of shipping: an instance scaled in and its machine removed, its lines are kept."""
    fleet = fleet_of(state, store, FakeRunner())
    stopped = fleet.start(instance("i-0aaaaaaaaaaaaaaa1"))
    Path(stopped.logs, "messages.log").write_text("the last request\n")
    gone = Machine(
        "i-0bbbbbbbbbbbbbbb2", "demo", "blue", AMI, str(state.local / "machines" / "gone"),
        pid=999_999_99, state="running", logs=str(state.machine_logs("i-0bbbbbbbbbbbbbbb2")),
    )  # fmt: skip
    Path(gone.logs).mkdir(parents=True)
    Path(gone.logs, "messages.log").write_text("its boot\n")
    fleet.machines[gone.instance_id] = gone
    fleet.save()

    fleet.stop(stopped.instance_id)
    fleet_of(state, store).load()  # the other machine's QEMU is gone: forgotten

    assert machines.read_records(state) == []
    assert not Path(stopped.directory).exists()
    assert Path(stopped.logs) == state.local / "logs" / "i-0aaaaaaaaaaaaaaa1"
    assert Path(stopped.logs, "messages.log").read_text() == "the last request\n"
    assert Path(gone.logs, "messages.log").read_text() == "its boot\n"


def test_local_status_names_each_machines_log_folder(state, store) -> None:
    from bake.local import dataplane

    started = fleet_of(state, store, FakeRunner()).start(instance("i-0aaaaaaaaaaaaaaa1"))

    (listed,) = dataplane.status(state)["machines"]

    assert listed["logs"] == started.logs == str(state.local / "logs" / "i-0aaaaaaaaaaaaaaa1")
