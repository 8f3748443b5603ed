"""Only the weights change where the traffic is split: an authenticate-oidc action in front of the
forward, the order of actions, the forward's stickiness and the listener's other rules stay as they
were; a service can split its traffic in a listener rule instead of the default action."""

from __future__ import annotations

import copy

import pytest

from bake import bluegreen, pipeline
from bake.aws import elbv2
from bake.errors import BakeError, InputError
from bake.local.seed import ensure_seeded
from bake.records import VerifiedAmi

OIDC = {
    "Type": "authenticate-oidc",
    "Order": 1,
    "AuthenticateOidcConfig": {
        "Issuer": "https://idp.example.com",
        "AuthorizationEndpoint": "https://idp.example.com/authorize",
        "TokenEndpoint": "https://idp.example.com/token",
        "UserInfoEndpoint": "https://idp.example.com/userinfo",
        "ClientId": "goldenbake",
        "ClientSecret": "s3cret",
        "OnUnauthenticatedRequest": "authenticate",
    },
}
STICKY = {"Enabled": True, "DurationSeconds": 3600}
# What AWS never returns, and the toolkit therefore sends as "keep the one you have".
SECRET_KEYS = ("ClientSecret", "UseExistingClientSecret")


def _forward(weights: dict[str, int], order: int = 2) -> dict:
    return {
        "Type": "forward",
        "Order": order,
        "ForwardConfig": {
            "TargetGroups": [{"TargetGroupArn": arn, "Weight": w} for arn, w in weights.items()],
            "TargetGroupStickinessConfig": STICKY,
        },
    }


def _without_secrets(actions: list[dict]) -> list[dict]:
    actions = copy.deepcopy(actions)
    for action in actions:
        for key in SECRET_KEYS:
            action.get("AuthenticateOidcConfig", {}).pop(key, None)
    return actions


@pytest.fixture
def seeded(cloud, config, base_ami):
    ensure_seeded(cloud, config, base_ami)
    return cloud


def _listener(cloud, service) -> dict:
    switch, _ = bluegreen.find_switch(cloud, service)
    (listener,) = cloud.client("elbv2").describe_listeners(ListenerArns=[switch.listener_arn])[
        "Listeners"
    ]
    return listener


def _swap(make_context, register_ami, service_config=None) -> None:
    ctx = make_context(records=(VerifiedAmi(register_ami("goldenbake-base-2")),))
    if service_config is not None:
        ctx.service = service_config
    for name in pipeline.SWAP:
        ctx.stage = name
        for record in pipeline.STAGES[name](ctx).run().records:
            ctx.records.add(record)


def test_a_swap_changes_only_the_forward_weights(
    seeded, config, make_context, register_ami
) -> None:
    service = config.service("demo")
    elb = seeded.client("elbv2")
    listener = _listener(seeded, service)
    blue_arn = bluegreen.describe(seeded, service).live.target_group_arn
    elb.modify_listener(
        ListenerArn=listener["ListenerArn"], DefaultActions=[OIDC, _forward({blue_arn: 100})]
    )
    rule = elb.create_rule(
        ListenerArn=listener["ListenerArn"],
        Priority=5,
        Conditions=[{"Field": "path-pattern", "Values": ["/admin/*"]}],
        Actions=[
            {
                "Type": "fixed-response",
                "FixedResponseConfig": {"StatusCode": "403", "ContentType": "text/plain"},
            }
        ],
    )["Rules"][0]
    before = _listener(seeded, service)["DefaultActions"]

    _swap(make_context, register_ami)

    after = _listener(seeded, service)["DefaultActions"]
    green_arn = bluegreen.describe(seeded, service).live.target_group_arn
    expected = copy.deepcopy(before)
    expected[1]["ForwardConfig"]["TargetGroups"] = [
        {"TargetGroupArn": blue_arn, "Weight": 0},
        {"TargetGroupArn": green_arn, "Weight": 100},
    ]
    key = lambda group: group["TargetGroupArn"]  # noqa: E731
    after[1]["ForwardConfig"]["TargetGroups"].sort(key=key)
    expected[1]["ForwardConfig"]["TargetGroups"].sort(key=key)
    assert _without_secrets(after) == _without_secrets(expected)
    assert after[1]["ForwardConfig"]["TargetGroupStickinessConfig"] == STICKY
    (rule_after,) = elb.describe_rules(RuleArns=[rule["RuleArn"]])["Rules"]
    assert rule_after == rule


def test_weights_keep_the_actions_their_order_and_the_oidc_secret(seeded) -> None:
    actions = [OIDC, _forward({"arn:blue": 100})]
    changed = elbv2.with_weights(actions, {"arn:blue": 40, "arn:green": 60})
    assert [action["Type"] for action in changed] == ["authenticate-oidc", "forward"]
    assert changed[0]["AuthenticateOidcConfig"]["UseExistingClientSecret"] is True
    assert "ClientSecret" not in changed[0]["AuthenticateOidcConfig"]
    assert changed[1]["ForwardConfig"] == {
        "TargetGroups": [
            {"TargetGroupArn": "arn:blue", "Weight": 40},
            {"TargetGroupArn": "arn:green", "Weight": 60},
        ],
        "TargetGroupStickinessConfig": STICKY,
    }
    assert actions == [OIDC, _forward({"arn:blue": 100})], "the input is not changed"


def test_a_plain_forward_becomes_a_weighted_one() -> None:
    changed = elbv2.with_weights(
        [{"Type": "forward", "TargetGroupArn": "arn:blue"}], {"arn:blue": 0, "arn:green": 100}
    )
    assert changed == [
        {
            "Type": "forward",
            "ForwardConfig": {
                "TargetGroups": [
                    {"TargetGroupArn": "arn:blue", "Weight": 0},
                    {"TargetGroupArn": "arn:green", "Weight": 100},
                ]
            },
        }
    ]


def test_actions_without_a_forward_are_refused() -> None:
    with pytest.raises(BakeError, match="no forward action"):
        elbv2.with_weights([{"Type": "fixed-response"}], {"arn:blue": 100})


def test_a_service_can_split_its_traffic_in_a_listener_rule(
    seeded, make_config, make_context, register_ami
) -> None:
    config = make_config(listener_rule=10)
    service = config.service("demo")
    elb = seeded.client("elbv2")
    listener = _listener(seeded, config.service("demo").model_copy(update={"listener_rule": None}))
    blue_arn = listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"][0]["TargetGroupArn"]
    not_found = {
        "Type": "fixed-response",
        "FixedResponseConfig": {"StatusCode": "404", "ContentType": "text/plain"},
    }
    elb.modify_listener(ListenerArn=listener["ListenerArn"], DefaultActions=[not_found])
    elb.create_rule(
        ListenerArn=listener["ListenerArn"],
        Priority=10,
        Conditions=[{"Field": "host-header", "Values": ["demo.example.com"]}],
        Actions=[_forward({blue_arn: 100}, order=1)],
    )
    default_before = _listener(seeded, service)["DefaultActions"]

    _swap(make_context, register_ami, service)

    state = bluegreen.describe(seeded, service)
    assert (state.live.color, state.live.weight, state.standby.weight) == ("green", 100, 0)
    assert state.switch.rule_arn is not None
    (rule,) = elb.describe_rules(RuleArns=[state.switch.rule_arn])["Rules"]
    assert rule["Conditions"][0]["Values"] == ["demo.example.com"]
    assert rule["Actions"][0]["ForwardConfig"]["TargetGroupStickinessConfig"] == STICKY
    assert _listener(seeded, service)["DefaultActions"] == default_before


def test_a_listener_rule_that_does_not_exist_is_bad_input(seeded, make_config, make_context):
    config = make_config(listener_rule=77)
    ctx = make_context(config=config)
    with pytest.raises(InputError, match="has no rule 77"):
        pipeline.execute(ctx, "rollback")
