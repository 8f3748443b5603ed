"""The fleet template: the lock table bake's leases expect, a role holding exactly `bake
iam-policy`'s statements, and YAML that reads back as the template it was written from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bake import cloudformation, iam
from bake.cli import main
from bake.config import Config, from_dict, load
from bake.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def aws_config(tmp_path: Path, services: int = 1, **aws: Any) -> Config:
    (tmp_path / "suites").mkdir(exist_ok=True)
    raw = {
        "target": "aws",
        "aws": {"region": "eu-west-1", **aws},
        "images": {
            "base": {
                "base": "ssm:/aws/service/debian/release/12/latest/amd64",
                "steps": ["patch"],
                "verify": ["suites"],
            }
        },
        "services": {
            f"service-{number:02}": {"image": "base", "capacity": 2} for number in range(services)
        },
    }
    return from_dict(raw, tmp_path / "bake.toml")


def role_policies(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The policy documents the role holds, inline or through the template's managed policies."""
    role = template["Resources"]["PipelineRole"]["Properties"]
    inline = [policy["PolicyDocument"] for policy in role.get("Policies", [])]
    managed = [
        template["Resources"][ref["Ref"]]["Properties"]["PolicyDocument"]
        for ref in role.get("ManagedPolicyArns", [])
    ]
    return inline + managed


def test_the_lock_table_is_the_one_bakes_leases_expect(tmp_path: Path) -> None:
    template = cloudformation.fleet_template(aws_config(tmp_path, lock_table="team-locks"))
    table = template["Resources"]["LockTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    properties = table["Properties"]
    assert properties["TableName"] == "team-locks"
    assert properties["KeySchema"] == [{"AttributeName": "LockID", "KeyType": "HASH"}]
    assert properties["AttributeDefinitions"] == [{"AttributeName": "LockID", "AttributeType": "S"}]
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "Expires", "Enabled": True}
    assert template["Outputs"]["LockTable"]["Value"] == {"Ref": "LockTable"}


def test_the_role_holds_exactly_the_iam_policy_of_the_config(tmp_path: Path) -> None:
    config = aws_config(tmp_path, lock_table="team-locks")
    template = cloudformation.fleet_template(config)
    assert role_policies(template) == [iam.policy(config)]
    trust = template["Resources"]["PipelineRole"]["Properties"]["AssumeRolePolicyDocument"]
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"AWS": {"Ref": "TrustedPrincipalArn"}}
    assert statement["Action"] == "sts:AssumeRole"
    assert "TrustedPrincipalArn" in template["Parameters"]


def test_a_config_without_a_lock_table_gets_the_default_one_and_its_leases(
    tmp_path: Path,
) -> None:
    config = aws_config(tmp_path)
    assert config.aws.lock_table is None
    template = cloudformation.fleet_template(config)
    assert template["Resources"]["LockTable"]["Properties"]["TableName"] == "goldenbake-locks"
    (policy,) = role_policies(template)
    leases = next(s for s in policy["Statement"] if s["Sid"] == "HoldLeasesInTheLockTable")
    assert leases["Resource"] == "arn:aws:dynamodb:eu-west-1:*:table/goldenbake-locks"
    others = [s for s in policy["Statement"] if s["Sid"] != "HoldLeasesInTheLockTable"]
    assert others == iam.policy(config)["Statement"], "the policy, and the default table's leases"
    assert 'add lock_table = "goldenbake-locks"' in cloudformation.fleet_yaml(config)
    named = aws_config(tmp_path, lock_table="goldenbake-locks")
    assert "add lock_table" not in cloudformation.fleet_yaml(named)


def test_the_stack_must_be_in_the_config_region(tmp_path: Path) -> None:
    rules = cloudformation.fleet_template(aws_config(tmp_path))["Rules"]
    (assertion,) = rules["InTheConfigRegion"]["Assertions"]
    assert assertion["Assert"] == {"Fn::Equals": [{"Ref": "AWS::Region"}, "eu-west-1"]}


def test_a_policy_too_big_for_a_role_inline_is_split_into_managed_policies(
    tmp_path: Path,
) -> None:
    config = aws_config(tmp_path, services=20)
    whole = iam.policy(cloudformation.with_lock_table(config))
    assert cloudformation.policy_size(whole) > cloudformation.INLINE_POLICY_LIMIT
    template = cloudformation.fleet_template(config)
    parts = role_policies(template)
    assert "Policies" not in template["Resources"]["PipelineRole"]["Properties"]
    assert len(parts) > 1
    assert all(
        cloudformation.policy_size(part) <= cloudformation.MANAGED_POLICY_LIMIT for part in parts
    )
    assert [s for part in parts for s in part["Statement"]] == whole["Statement"]
    assert all(part["Version"] == "2012-10-17" for part in parts)


def test_a_small_policy_stays_one_inline_document(tmp_path: Path) -> None:
    document = iam.policy(aws_config(tmp_path))
    assert cloudformation.split_policy(document) == [document]


def test_a_statement_bigger_than_a_managed_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="RollOutBlueGreenGroups is .* more than a managed"):
        cloudformation.fleet_template(aws_config(tmp_path, services=60))


def test_the_yaml_reads_back_as_the_template(tmp_path: Path) -> None:
    for config in (aws_config(tmp_path), aws_config(tmp_path, services=20)):
        template = cloudformation.fleet_template(config)
        assert yaml.safe_load(cloudformation.fleet_yaml(config)) == template


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("ec2:RunInstances", "ec2:RunInstances"),
        ("arn:aws:ec2:eu-west-1::image/*", "arn:aws:ec2:eu-west-1::image/*"),
        ("Runs goldenbake's pipeline", "Runs goldenbake's pipeline"),
        ("2012-10-17", '"2012-10-17"'),
        ("*", '"*"'),
        ("Null", '"Null"'),
        ("false", '"false"'),
        ("yes", '"yes"'),
        ("[aws] lock_table", '"[aws] lock_table"'),
        ("key: value", '"key: value"'),
        ("trailing:", '"trailing:"'),
        ("a #comment", '"a #comment"'),
        ("", '""'),
        (True, "true"),
        (14400, "14400"),
    ],
)
def test_strings_yaml_could_misread_are_quoted(value: Any, written: str) -> None:
    assert cloudformation.to_yaml({"Key": value}) == f"Key: {written}\n"


def test_nested_lists_and_mappings_are_block_style() -> None:
    document = {"A": [{"B": 1, "C": ["x", "w"]}, [], {}, ["v"]], "D": {}}
    assert cloudformation.to_yaml(document) == (
        "A:\n  - B: 1\n    C:\n      - x\n      - w\n  - []\n  - {}\n  - - v\n\nD: {}\n"
    )


# Keys as CloudFormation and IAM write them, values of every kind the templates hold.
_TEXT = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=30)
_KEYS = st.one_of(_TEXT, st.from_regex(r"[A-Za-z][A-Za-z0-9:/*._-]{0,20}", fullmatch=True))
_SCALARS = st.one_of(st.booleans(), st.integers(-(10**6), 10**6), _TEXT, _KEYS)
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=20,
)


@given(st.dictionaries(_KEYS, _DOCUMENTS, min_size=1, max_size=4))
def test_any_document_reads_back_as_itself(document: dict[str, Any]) -> None:
    assert yaml.safe_load(cloudformation.to_yaml(document)) == document


def test_the_command_prints_the_template(tmp_path: Path, capsys) -> None:
    (tmp_path / "suites").mkdir()
    path = tmp_path / "bake.toml"
    path.write_text(
        'target = "aws"\n\n[aws]\nregion = "eu-west-1"\nlock_table = "team-locks"\n\n'
        '[images.base]\nbase = "ssm:/aws/service/debian/release/12/latest/amd64"\n'
        'steps = ["patch"]\nverify = ["suites"]\n\n[services.demo]\nimage = "base"\ncapacity = 2\n'
    )
    config = load(path)
    args = ["--config", str(path), "iam-policy", "--format", "cloudformation"]
    assert main(args) == 0
    assert capsys.readouterr().out == cloudformation.fleet_yaml(config)
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == cloudformation.fleet_template(config)
    assert main(["--config", str(path), "iam-policy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == iam.policy(config), "the default is unchanged"
