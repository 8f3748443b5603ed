"""Locks that hold across runners: leases in a DynamoDB table (partition key LockID) on moto, with
two state directories standing for two machines. Time is a clock the test turns, never a sleep."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from bake.cli import main
from bake.errors import InputError, LeaseLost, LockHeld
from bake.history import History
from bake.leases import Holder, LeaseLocks
from bake.polling import wait_until
from tests.integration.aws_project import write_config

TABLE = "goldenbake-locks"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(cloud) -> str:
    cloud.client("dynamodb").create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return TABLE


def leases(cloud, clock: Clock, **kwargs) -> LeaseLocks:
    return LeaseLocks(
        cloud, TABLE, clock=clock, renew_every=kwargs.pop("renew_every", 3600), **kwargs
    )


HOLDER = Holder("swap", "20261127T070000Z-abc123", "runner-1", 4242, "2026-11-27T07:00:00Z")


def test_a_second_runner_is_refused_and_told_who_holds_the_lock(cloud, table) -> None:
    clock = Clock()
    with leases(cloud, clock).hold_all(["service-demo", "image-base"], HOLDER):
        with (
            pytest.raises(LockHeld) as raised,
            leases(cloud, clock).hold_all(["service-demo"], HOLDER),
        ):
            pass
        assert raised.value.exit_code == 3
        assert raised.value.message == (
            "service-demo is locked by bake swap run 20261127T070000Z-abc123 on runner-1 "
            "(pid 4242) since 2026-11-27T07:00:00Z"
        )
    with leases(cloud, clock).hold_all(["service-demo"], HOLDER):
        pass
    assert cloud.client("dynamodb").scan(TableName=TABLE)["Items"] == []


def test_a_lease_its_holder_stopped_renewing_lapses_after_the_ttl(cloud, table) -> None:
    clock = Clock()
    first = leases(cloud, clock, ttl=60)
    second = leases(cloud, clock, ttl=60)
    with first.hold_all(["service-demo"], HOLDER):
        clock.now += 59
        with pytest.raises(LockHeld), second.hold_all(["service-demo"], HOLDER):
            pass
        clock.now += 2
        with second.hold_all(["service-demo"], HOLDER):
            (item,) = cloud.client("dynamodb").scan(TableName=TABLE)["Items"]
            assert item["LockID"]["S"] == "service-demo"
    assert cloud.client("dynamodb").scan(TableName=TABLE)["Items"] == []


def test_a_lapsed_holder_leaves_the_new_holders_lease_alone(cloud, table) -> None:
    clock = Clock()
    first, second = leases(cloud, clock, ttl=60), leases(cloud, clock, ttl=60)
    with first.hold_all(["service-demo"], HOLDER):
        clock.now += 61
        taken = second.hold_all(["service-demo"], HOLDER)
        taken.__enter__()
    (item,) = cloud.client("dynamodb").scan(TableName=TABLE)["Items"]
    assert item["LockID"]["S"] == "service-demo"
    taken.__exit__(None, None, None)
    assert cloud.client("dynamodb").scan(TableName=TABLE)["Items"] == []


def test_the_lease_is_renewed_while_the_run_lives(cloud, table) -> None:
    clock = Clock()
    client = cloud.client("dynamodb")

    def expires() -> float:
        item = client.get_item(TableName=TABLE, Key={"LockID": {"S": "service-demo"}})["Item"]
        return float(item["Expires"]["N"])

    with leases(cloud, clock, ttl=60, renew_every=0.01).hold_all(["service-demo"], HOLDER):
        first = expires()
        clock.now += 45
        assert wait_until(lambda: expires() >= first + 45, 10, interval=0.01)
        with pytest.raises(LockHeld), leases(cloud, clock).hold_all(["service-demo"], HOLDER):
            pass


def test_a_lost_lease_stops_the_run(cloud, table) -> None:
    clock = Clock()
    held = leases(cloud, clock, renew_every=0.01).hold_all(["service-demo"], HOLDER)
    with pytest.raises(LeaseLost, match="service-demo was taken by another run") as lost, held:
        cloud.client("dynamodb").delete_item(TableName=TABLE, Key={"LockID": {"S": "service-demo"}})
        wait_until(lambda: False, 10, interval=0.01)
    assert lost.value.exit_code == 3


def test_a_lease_that_cannot_be_renewed_for_any_reason_stops_the_run(
    cloud, table, monkeypatch
) -> None:
    def unreadable(self, name: str, token: str) -> None:
        raise ValueError("an answer botocore could not parse")

    held = leases(cloud, Clock(), renew_every=0.01).hold_all(["service-demo"], HOLDER)
    with pytest.raises(LeaseLost, match="could not be renewed .an answer botocore"), held:
        monkeypatch.setattr(LeaseLocks, "_renew", unreadable)
        wait_until(lambda: False, 10, interval=0.01)


def test_a_lost_lease_stops_the_run_even_where_sigint_is_ignored(cloud, table) -> None:
    """A script's background job starts with SIGINT ignored; the lease must still stop the run."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        held = leases(cloud, Clock(), renew_every=0.01).hold_all(["service-demo"], HOLDER)
        with pytest.raises(LeaseLost), held:
            client = cloud.client("dynamodb")
            client.delete_item(TableName=TABLE, Key={"LockID": {"S": "service-demo"}})
            wait_until(lambda: False, 10, interval=0.01)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_lock_table_that_does_not_exist_is_bad_input(cloud) -> None:
    missing = "lock_table 'goldenbake-locks' does not exist"
    with pytest.raises(InputError, match=missing), leases(cloud, Clock()).hold_all(["x"], HOLDER):
        pass


def test_two_state_directories_share_one_lock(
    tmp_path: Path, moto_endpoint: str, cloud, table, capsys, monkeypatch
) -> None:
    """Two runners (two state directories) of one account: the second exits 3 at once."""
    first_dir, second_dir = tmp_path / "runner-1", tmp_path / "runner-2"
    for folder in (first_dir, second_dir):
        folder.mkdir()
        config = write_config(folder, moto_endpoint)
        config.write_text(
            config.read_text().replace(
                'communicator = "none"', f'communicator = "none"\nlock_table = "{TABLE}"'
            )
        )
    with LeaseLocks(cloud, TABLE).hold_all(["service-demo"], HOLDER):
        code = main(["--config", str(second_dir / "bake.toml"), "swap", "demo"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith(
        "error: service-demo is locked by bake swap run 20261127T070000Z-abc123 on runner-1"
    )
    history = second_dir / "state" / "history.sqlite"
    assert not history.exists() or History(history).runs() == [], "nothing ran"
