"""Properties of retire's decision over any set of AMIs, driven by hypothesis without a cloud.

Creation dates, run ids and names are drawn from small pools so that ties, the case that hid the
keep-the-oldest bug, are common rather than rare.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bake.retire import Decision, decide_images

# No example database: nothing is written into the work tree (a failure prints the example
# to reproduce it). tests/conftest.py sets no deadline.
properties = settings(database=None, max_examples=300)

CREATED = ["2026-11-27T06:50:00.000Z", "2026-11-27T06:50:01.000Z", "2026-11-28T00:00:00.000Z"]
RUN_IDS = ["20261127T065000Z-1a2b3c", "20261127T065000Z-0f0f0f", "20261127T070000Z-1a2b3c"]
NAMES = ["base-1", "base-2", ""]
IMAGE = "base"
PUBLISHED_AS = "published as /bake/images/base/latest"


@st.composite
def an_ami(draw: st.DrawFn) -> dict[str, Any]:
    """One AMI as describe_images gives it, with the tags a build leaves (or some missing)."""
    tags = {"bake:image": IMAGE}
    verified = draw(st.sampled_from(["true", "false", None]))
    if verified is not None:
        tags["bake:verified"] = verified
    run_id = draw(st.sampled_from([*RUN_IDS, None]))
    if run_id is not None:
        tags["bake:run-id"] = run_id
    ami = {
        "ImageId": "ami-" + draw(st.text(alphabet="0123456789abcdef", min_size=3, max_size=3)),
        "CreationDate": draw(st.sampled_from(CREATED)),
        "Tags": [{"Key": key, "Value": value} for key, value in tags.items()],
    }
    if name := draw(st.sampled_from(NAMES)):
        ami["Name"] = name
    return ami


# The AMIs of one image, AMI id -> which group uses it, the published AMI, how many to keep.
Scenario = tuple[list[dict[str, Any]], dict[str, str], str | None, int]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """AMIs of one image, the ones groups use (some of another image), the published one, keep."""
    amis = draw(st.lists(an_ami(), max_size=10, unique_by=lambda ami: ami["ImageId"]))
    ids = [ami["ImageId"] for ami in amis]
    elsewhere = ["ami-of-another-image"]
    in_use = draw(st.sets(st.sampled_from(ids + elsewhere)))
    used = {ami: f"web-asg (launch template version {n})" for n, ami in enumerate(sorted(in_use))}
    published = draw(st.sampled_from([*ids, *elsewhere, None]))
    keep = draw(st.integers(min_value=1, max_value=12))
    return amis, used, published, keep


def tag(ami: dict[str, Any], key: str) -> str | None:
    return next((tag["Value"] for tag in ami["Tags"] if tag["Key"] == key), None)


def spec_order(ami: dict[str, Any]) -> tuple[str, str, str, str]:
    """Newest first, as the issue states it (written out here, not taken from bake.retire)."""
    return (ami["CreationDate"], tag(ami, "bake:run-id") or "", ami.get("Name", ""), ami["ImageId"])


def newest_first(amis: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(amis, key=spec_order, reverse=True)


def decide(
    scenario: tuple[list[dict[str, Any]], dict[str, str], str | None, int],
) -> list[Decision]:
    amis, used, published, keep = scenario
    return decide_images(amis, used, published, keep, IMAGE)


@properties
@given(scenarios())
def test_every_ami_is_decided_once_newest_first(scenario: Scenario) -> None:
    amis = scenario[0]
    decisions = decide(scenario)
    assert [decision.ami for decision in decisions] == [
        ami["ImageId"] for ami in newest_first(amis)
    ]


@properties
@given(scenarios(), st.data())
def test_the_decisions_do_not_depend_on_the_order_given(
    scenario: Scenario, data: st.DataObject
) -> None:
    amis, used, published, keep = scenario
    shuffled = data.draw(st.permutations(amis))
    assert decide((shuffled, used, published, keep)) == decide(scenario)


@properties
@given(scenarios())
def test_an_ami_in_use_or_published_is_never_retired(scenario: Scenario) -> None:
    _, used, published, _ = scenario
    for decision in decide(scenario):
        if decision.ami in used:
            assert decision.keep and decision.reason == f"in use by {used[decision.ami]}"
        elif decision.ami == published:
            assert decision.keep and decision.reason == PUBLISHED_AS


@properties
@given(scenarios())
def test_the_newest_verified_are_kept_and_older_verified_retired(scenario: Scenario) -> None:
    amis, used, published, keep = scenario
    verified = [ami["ImageId"] for ami in newest_first(amis) if tag(ami, "bake:verified") == "true"]
    newest = verified[:keep]
    assert len(newest) == min(keep, len(verified))
    protected = set(used) | {published}
    decisions = {decision.ami: decision for decision in decide(scenario)}
    kept_verified = {ami for ami in verified if decisions[ami].keep}
    assert kept_verified == set(newest) | (set(verified) & protected)
    for ami in set(verified) - protected:
        expected = "one of the newest" if ami in newest else "older than the newest"
        assert decisions[ami].reason == f"{expected} {keep} verified"


@properties
@given(scenarios())
def test_an_unverified_ami_nobody_uses_is_retired(scenario: Scenario) -> None:
    amis, used, published, _ = scenario
    decisions = {decision.ami: decision for decision in decide(scenario)}
    for ami in amis:
        verified = tag(ami, "bake:verified")
        if verified == "true" or ami["ImageId"] in used or ami["ImageId"] == published:
            continue
        decision = decisions[ami["ImageId"]]
        assert not decision.keep
        assert decision.verified == (verified or "never")
        assert decision.reason == ("failed verification" if verified else "never verified")


def test_keep_below_one_is_refused() -> None:
    """keep=0 would retire every verified AMI nobody uses."""
    with pytest.raises(ValueError, match="^keep must be at least 1, not 0$"):
        decide_images([], {}, None, 0, IMAGE)
