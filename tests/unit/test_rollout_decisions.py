"""Deciding a swap and a rollback from the recorded rollout, as properties over every split of
the traffic and every recorded state: a new rollout never takes a colour that carries traffic, a
resumed one keeps the colours it chose, and a rollback never goes forward."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bake import bluegreen
from bake.aws.elbv2 import TrafficSwitch
from bake.errors import InputError
from bake.rollouts import STATES, Rollout

AMIS = ("ami-old", "ami-new", "ami-other")


def state_of(weights: dict[str, int], rollout: Rollout | None) -> bluegreen.ServiceState:
    colors = {
        color: bluegreen.ColorState(color, asg=f"demo-{color}", weight=weights[color])
        for color in ("blue", "green")
    }
    live = bluegreen.live_color(weights)
    return bluegreen.ServiceState(
        "demo", TrafficSwitch("listener"), colors[live], colors[bluegreen.other(live)], rollout
    )


weights = st.fixed_dictionaries(
    {"blue": st.integers(min_value=0, max_value=100), "green": st.integers(0, 100)}
).filter(lambda w: sum(w.values()) > 0)
rollouts = st.none() | st.builds(
    lambda incoming, state, ami: Rollout(
        "run-1", state, incoming, ami, bluegreen.other(incoming), "ami-old", "2026-11-27"
    ),
    st.sampled_from(["blue", "green"]),
    st.sampled_from(STATES),
    st.sampled_from(AMIS),
)


@given(weights=weights, rollout=rollouts, ami=st.sampled_from(AMIS))
def test_a_swap_never_takes_a_colour_with_traffic_unless_it_resumes_that_rollout(
    weights: dict[str, int], rollout: Rollout | None, ami: str
) -> None:
    state = state_of(weights, rollout)
    try:
        decision = bluegreen.decide(state, ami)
    except InputError as refused:
        assert refused.exit_code == 2
        carriers = [color for color, weight in weights.items() if weight]
        pending = rollout is not None and rollout.pending
        assert len(carriers) == 2 or (pending and weights[rollout.incoming] and rollout.ami != ami)
        return
    assert decision.incoming != decision.rollback
    if decision.resumes:
        assert decision.resumes == rollout and rollout.ami == ami
        assert (decision.incoming, decision.rollback) == (rollout.incoming, rollout.rollback)
    else:
        assert weights[decision.incoming] == 0
    if rollout is not None and rollout.pending:
        assert decision.rollback == rollout.rollback


@given(weights=weights, rollout=rollouts)
def test_a_rollback_goes_to_the_colour_of_the_previously_live_ami_and_never_forward(
    weights: dict[str, int], rollout: Rollout | None
) -> None:
    state = state_of(weights, rollout)
    if rollout is not None and rollout.state == "rolled-back":
        with pytest.raises(InputError, match="would roll forward"):
            bluegreen.rollback_target(state)
        return
    target = bluegreen.rollback_target(state)
    if rollout is not None and rollout.state in ("rolling", "live"):
        assert target == rollout.rollback
    else:
        assert target == bluegreen.other(bluegreen.live_color(weights))


@pytest.mark.parametrize(
    ("value", "field", "expected"),
    [
        (
            "run=r1 state=rolling to=green ami=ami-1 from=blue from_ami=ami-0 at=t",
            "incoming",
            "green",
        ),
        ("run=r1 state=live to=blue ami=ami-1 from=green at=t", "rollback_ami", None),
    ],
)
def test_the_record_reads_back_what_was_written(value: str, field: str, expected: str) -> None:
    rollout = Rollout.decode(value)
    assert getattr(rollout, field) == expected
    assert Rollout.decode(rollout.encode()) == rollout


@pytest.mark.parametrize(
    "value",
    ["run=r1 state=paused to=green ami=ami-1 from=blue at=t", "to=green ami=ami-1", "garbage"],
)
def test_a_record_this_toolkit_did_not_write_is_an_error_not_a_guess(value: str) -> None:
    with pytest.raises(Exception, match="rollout record .* is not readable"):
        Rollout.decode(value)


@given(
    st.builds(
        Rollout,
        run_id=st.from_regex(r"\A[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}\Z"),
        state=st.sampled_from(STATES),
        incoming=st.sampled_from(["blue", "green"]),
        ami=st.from_regex(r"\Aami-[0-9a-f]{17}\Z"),
        rollback=st.sampled_from(["blue", "green"]),
        rollback_ami=st.none() | st.from_regex(r"\Aami-[0-9a-f]{17}\Z"),
        started=st.just("2026-11-27T10:44:36.274105Z"),
    )
)
def test_every_record_fits_a_load_balancer_tag_value(rollout: Rollout) -> None:
    value = rollout.encode()
    assert len(value) <= 256
    assert all(ch.isalnum() or ch in " _.:/=+-@" for ch in value)
    assert Rollout.decode(value) == rollout


RELEASES = (None, "1.0", "2.0")
released_rollouts = st.none() | st.builds(
    lambda incoming, state, ami, release: Rollout(
        "run-1",
        state,
        incoming,
        ami,
        bluegreen.other(incoming),
        "ami-old",
        "2026-11-27",
        release=release,
    ),
    st.sampled_from(["blue", "green"]),
    st.sampled_from(STATES),
    st.sampled_from(AMIS),
    st.sampled_from(RELEASES),
)


@given(
    weights=weights,
    rollout=released_rollouts,
    ami=st.sampled_from(AMIS),
    release=st.sampled_from(RELEASES),
)
def test_a_release_resumes_only_the_rollout_of_the_same_ami_and_release(
    weights: dict[str, int], rollout: Rollout | None, ami: str, release: str | None
) -> None:
    """`bake release` names its release: an unfinished rollout of the same AMI with another
    release is not resumed (it is replaced only while it moved no traffic); a swap of an AMI alone
    resumes the rollout of that AMI whatever release it carries."""
    state = state_of(weights, rollout)
    try:
        decision = bluegreen.decide(state, ami, release)
    except InputError:
        return
    if decision.resumes:
        assert decision.resumes.ami == ami
        assert release is None or decision.resumes.release == release
        assert decision.resumes.incoming == decision.incoming
    elif rollout is not None and rollout.pending:
        assert weights[rollout.incoming] == 0, "a rollout carrying traffic is never replaced"
        assert decision.replaces == rollout


def test_an_interrupted_release_is_resumed_by_the_same_release() -> None:
    pending = Rollout("run-1", "rolling", "green", "ami-old", "blue", "ami-old", "2026", "2.0")
    state = state_of({"blue": 50, "green": 50}, pending)

    assert bluegreen.decide(state, "ami-old", "2.0").resumes == pending
    with pytest.raises(InputError, match="carries 50% of the traffic"):
        bluegreen.decide(state, "ami-old", "3.0")
