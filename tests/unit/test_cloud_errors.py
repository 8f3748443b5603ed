"""Cloud trouble is the toolkit's error, one line with the right exit code, never "internal
error": missing credentials, an unreachable endpoint, expired tokens, denied actions, throttling."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from bake import pipeline
from bake.aws.errors import CloudCredentialsError, CloudError, cloud_error
from bake.cli import main
from bake.stages.base import Outcome, Stage

REPO = Path(__file__).resolve().parents[2]


def client_error(code: str, operation: str = "DescribeImages", retries: int = 0) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} says no"},
            "ResponseMetadata": {"RetryAttempts": retries},
        },
        operation,
    )


@pytest.mark.parametrize(
    ("error", "kind", "exit_code", "text"),
    [
        (NoCredentialsError(), CloudCredentialsError, 2, "no usable AWS credentials"),
        (client_error("ExpiredToken"), CloudCredentialsError, 2, "credentials have expired"),
        (client_error("InvalidClientTokenId"), CloudCredentialsError, 2, "does not recognise"),
        (
            client_error("AccessDenied", "CreateLaunchTemplateVersion"),
            CloudError,
            1,
            "AWS denied CreateLaunchTemplateVersion (AccessDenied): AccessDenied says no "
            "(`bake iam-policy` prints the permissions",
        ),
        (client_error("UnauthorizedOperation"), CloudError, 1, "AWS denied DescribeImages"),
        (
            client_error("RequestLimitExceeded", retries=4),
            CloudError,
            1,
            "AWS throttled DescribeImages (RequestLimitExceeded) and still did after 5 attempts",
        ),
        (
            client_error("InternalError", retries=2),
            CloudError,
            1,
            "AWS refused DescribeImages (InternalError) after 3 attempts: InternalError says no",
        ),
        (
            EndpointConnectionError(endpoint_url="https://ec2.eu-west-1.amazonaws.com/"),
            CloudError,
            1,
            'cannot reach AWS: Could not connect to the endpoint URL: "https://ec2.eu-west-1',
        ),
    ],
)
def test_cloud_trouble_is_one_line_with_an_exit_code(
    error: Exception, kind: type, exit_code: int, text: str
) -> None:
    converted = cloud_error(error)
    assert isinstance(converted, kind)
    assert converted.exit_code == exit_code
    assert text in converted.format_message()
    assert "\n" not in converted.format_message()


def test_other_exceptions_are_left_alone() -> None:
    assert cloud_error(ZeroDivisionError()) is None


def test_a_run_that_meets_cloud_trouble_records_and_raises_it_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_pipeline import make_context

    class Denied(Stage):
        name = "denied"

        def run(self) -> Outcome:
            raise client_error("AccessDenied", "ModifyListener")

    monkeypatch.setitem(pipeline.STAGES, "denied", Denied)
    monkeypatch.setitem(pipeline.SEQUENCES, "test", ["denied"])
    ctx = make_context(tmp_path)
    with pytest.raises(CloudError, match="AWS denied ModifyListener"):
        pipeline.execute(ctx, "test")
    (run,) = ctx.history.runs()
    assert run.status == "failed" and run.error.startswith("AWS denied ModifyListener")


@pytest.fixture
def aws_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped AWS example, on a machine with no AWS credentials anywhere."""
    for folder in ("examples", "packer", "cookbooks", "serverspec_tests"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("BAKE_STATE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "examples" / "aws.bake.toml"


@pytest.mark.parametrize("command", [["plan"], ["status", "shop"]])
def test_without_credentials_the_aws_example_says_so(aws_project: Path, capsys, command) -> None:
    code = main(["--config", str(aws_project), *command])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: no usable AWS credentials: Unable to locate credentials")
    assert "internal error" not in err and len(err.strip().splitlines()) == 1


def test_an_endpoint_that_does_not_answer_says_so(aws_project: Path, capsys) -> None:
    text = aws_project.read_text().replace(
        '[aws]\nregion = "eu-west-1"',
        '[aws]\nregion = "eu-west-1"\nendpoint_url = "http://127.0.0.1:9"',
    )
    aws_project.write_text(text)
    code = main(["--config", str(aws_project), "plan"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(
        'error: cannot reach AWS: Could not connect to the endpoint URL: "http://127.0.0.1:9/"'
    )
