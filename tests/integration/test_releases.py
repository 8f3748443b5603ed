"""`bake release` on the aws target against moto: the application stored in the service's release
store, rolled out blue/green on the same AMI by a launch template version whose user data names
it, shown by status and history, rolled back to the previous release, and carried forward by a
later swap of a new AMI. moto reports every target healthy; the machines that really pull a
release at boot are the local target's (tests/e2e)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from bake import bluegreen, releases, rollouts
from bake.aws import images, launch_templates
from bake.cli import main
from bake.config import load
from bake.errors import ConfigError, InputError
from bake.local import seed
from bake.records import RunOptions, Traffic
from tests.integration.aws_project import make_app, write_config

STORE = "s3://team-releases/apps"


def project(
    tmp_path: Path,
    endpoint: str,
    cloud,
    source_ami: str,
    store: str | None = STORE,
    pulls: bool = True,
):
    config_path = write_config(tmp_path, endpoint)
    if pulls:
        config_path.write_text(
            config_path.read_text().replace(
                'steps = ["patch", "harden", "lineage"]',
                'steps = ["patch", "harden", "pull-deploy", "lineage"]',
            )
        )
    if store:
        config_path.write_text(
            config_path.read_text().replace("soak = 0\n", f'soak = 0\nreleases = "{store}"\n')
        )
    app = make_app(config_path)
    seed.ensure_seeded(cloud, app.config, source_ami)
    cloud.client("s3").create_bucket(Bucket="team-releases")
    return app


def application(root: Path, text: str) -> Path:
    root.mkdir(parents=True)
    (root / "index.html").write_text(text)
    return root


def release(app, path: Path, version: str | None = None, no_swap: bool = False):
    options = RunOptions(release_path=path, release_version=version)
    return app.run("release-only" if no_swap else "release", service="demo", options=options)


def named(cloud, color) -> dict | None:
    data = launch_templates.version(cloud, color.launch_template_id, color.launch_template_version)[
        "LaunchTemplateData"
    ]
    return releases.named_in(data.get("UserData"))


def test_releases_roll_out_on_the_same_ami_and_back(
    tmp_path: Path, moto_endpoint: str, cloud, source_ami: str
) -> None:
    app = project(tmp_path, moto_endpoint, cloud, source_ami)
    service = app.config.service("demo")

    first = release(app, application(tmp_path / "one", "one"), "1.0")
    state = bluegreen.describe(cloud, service)
    assert (state.live.color, state.live.ami, state.live.release) == ("green", source_ami, "1.0")
    assert (state.standby.ami, state.standby.release) == (source_ami, None)
    document = named(cloud, state.live)
    stored = cloud.client("s3").get_object(Bucket="team-releases", Key="apps/demo/1.0.tar.gz")
    body = stored["Body"].read()
    assert document["sha256"] == releases.pack(tmp_path / "one").sha256
    assert (
        stored["Metadata"]["sha256"]
        == document["sha256"]
        == __import__("hashlib").sha256(body).hexdigest()
    )
    assert document["url"] == "s3://team-releases/apps/demo/1.0.tar.gz"
    assert "endpoint" not in document, "on AWS the instance reaches S3 in its own region"
    assert first.records.need(Traffic, "test").release == "1.0"

    release(app, application(tmp_path / "two", "two"), "2.0")
    state = bluegreen.describe(cloud, service)
    assert (state.live.color, state.live.release, state.standby.release) == ("blue", "2.0", "1.0")
    recorded = rollouts.read(cloud, state.switch.load_balancer_arn, "demo")
    assert (recorded.release, recorded.rollback_release, recorded.ami) == ("2.0", "1.0", source_ami)

    back = app.run("rollback", service="demo")
    assert back.records.need(Traffic, "test").release == "1.0"
    state = bluegreen.describe(cloud, service)
    assert (state.live.color, state.live.release) == ("green", "1.0")

    listed = releases.ReleaseBook(app.history.path).listed("demo")
    assert [entry["version"] for entry in listed] == ["2.0", "1.0"]


def test_the_same_release_again_is_already_live(
    tmp_path: Path, moto_endpoint: str, cloud, source_ami: str
) -> None:
    app = project(tmp_path, moto_endpoint, cloud, source_ami)
    path = application(tmp_path / "one", "one")
    release(app, path)
    versions = len(
        launch_templates.versions(
            cloud, bluegreen.describe(cloud, app.config.service("demo")).live.launch_template_id
        )
    )

    again = release(app, path)

    assert again.to_dict().get("already_live") is True
    state = bluegreen.describe(cloud, app.config.service("demo"))
    assert len(launch_templates.versions(cloud, state.live.launch_template_id)) == versions
    assert state.live.release == releases.pack(path).sha256[:12], "the content's hash by default"


def test_other_content_under_a_stored_version_is_refused_and_nothing_changes(
    tmp_path: Path, moto_endpoint: str, cloud, source_ami: str
) -> None:
    app = project(tmp_path, moto_endpoint, cloud, source_ami)
    release(app, application(tmp_path / "one", "one"), "1.0")
    before = bluegreen.describe(cloud, app.config.service("demo"))

    with pytest.raises(InputError, match="stored already with other content"):
        release(app, application(tmp_path / "other", "other"), "1.0")

    after = bluegreen.describe(cloud, app.config.service("demo"))
    assert (after.live.color, after.live.launch_template_version) == (
        before.live.color,
        before.live.launch_template_version,
    )
    body = cloud.client("s3").get_object(Bucket="team-releases", Key="apps/demo/1.0.tar.gz")
    assert body["Body"].read() == releases.pack(tmp_path / "one").data


def test_no_swap_stores_and_records_the_release_and_rolls_nothing_out(
    tmp_path: Path, moto_endpoint: str, cloud, source_ami: str
) -> None:
    app = project(tmp_path, moto_endpoint, cloud, source_ami)

    result = release(app, application(tmp_path / "one", "one"), "1.0", no_swap=True)

    assert result.to_dict()["release"]["version"] == "1.0"
    state = bluegreen.describe(cloud, app.config.service("demo"))
    assert (state.live.color, state.live.release, state.standby) == ("blue", None, None)
    assert releases.ReleaseBook(app.history.path).listed("demo")[0]["version"] == "1.0"


def test_a_later_image_swap_keeps_the_live_release(
    tmp_path: Path, moto_endpoint: str, cloud, source_ami: str, register_ami
) -> None:
    app = project(tmp_path, moto_endpoint, cloud, source_ami)
    release(app, application(tmp_path / "one", "one"), "1.0")
    newer = register_ami("goldenbake-base-newer")
    images.tag(cloud, newer, {"bake:verified": "true", "bake:image": "base"})

    app.run("swap", service="demo", options=RunOptions(ami=newer))

    state = bluegreen.describe(cloud, app.config.service("demo"))
    assert (state.live.color, state.live.ami, state.live.release) == ("blue", newer, "1.0")


def test_the_teams_own_user_data_stays_beside_the_release(
    tmp_path: Path, moto_endpoint: str, cloud, source_ami: str
) -> None:
    app = project(tmp_path, moto_endpoint, cloud, source_ami)
    service = app.config.service("demo")
    live = bluegreen.describe(cloud, service).live
    script = "#!/bin/sh\necho bootstrapped by the team\n"
    data = launch_templates.sendable(
        cloud,
        launch_templates.version(cloud, live.launch_template_id, live.launch_template_version)[
            "LaunchTemplateData"
        ],
    )
    data["UserData"] = base64.b64encode(script.encode()).decode()
    version = launch_templates.create_version(cloud, live.launch_template_id, data, "team's")
    cloud.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName=live.asg,
        LaunchTemplate={"LaunchTemplateId": live.launch_template_id, "Version": str(version)},
    )

    release(app, application(tmp_path / "one", "one"), "1.0")

    state = bluegreen.describe(cloud, service)
    user_data = launch_templates.version(
        cloud, state.live.launch_template_id, state.live.launch_template_version
    )["LaunchTemplateData"]["UserData"]
    assert script in base64.b64decode(user_data).decode()
    assert state.live.release == "1.0"


def test_a_service_without_a_release_store_on_aws_is_bad_input(
    tmp_path: Path, moto_endpoint: str, cloud, source_ami: str
) -> None:
    app = project(tmp_path, moto_endpoint, cloud, source_ami, store=None)

    with pytest.raises(InputError, match="service demo has no release store"):
        release(app, application(tmp_path / "one", "one"), "1.0")
    assert bluegreen.describe(cloud, app.config.service("demo")).standby is None


def test_a_service_whose_image_does_not_pull_releases_is_bad_input(
    tmp_path: Path, moto_endpoint: str, cloud, source_ami: str, capsys
) -> None:
    app = project(tmp_path, moto_endpoint, cloud, source_ami, pulls=False)
    (tmp_path / "one").mkdir()

    code = main(["--config", str(app.config.path), "release", "demo", str(tmp_path / "one")])

    err = capsys.readouterr().err
    assert code == 2 and "which has no pull-deploy step" in err, err
    assert err.count("\n") == 1, "one line, its hint in it"
    assert app.history.runs() == [], "nothing ran"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["release", "demo", "missing-folder"], "does not exist"),
        (["release", "demo", ".", "--version", "a b"], "is not usable"),
        (["release", "nope", "."], "unknown service 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, moto_endpoint: str, cloud, source_ami: str, capsys, args, said
) -> None:
    app = project(tmp_path, moto_endpoint, cloud, source_ami)

    code = main(["--config", str(app.config.path), *args])

    err = capsys.readouterr().err
    assert code == 2 and said in err, err
    assert bluegreen.describe(cloud, app.config.service("demo")).standby is None


def test_history_lists_the_releases(
    tmp_path: Path, moto_endpoint: str, cloud, source_ami: str, capsys
) -> None:
    app = project(tmp_path, moto_endpoint, cloud, source_ami)
    release(app, application(tmp_path / "one", "one"), "1.0", no_swap=True)

    code = main(["--config", str(app.config.path), "--json", "history", "--releases"])

    listed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [(entry["service"], entry["version"]) for entry in listed] == [("demo", "1.0")]
    assert listed[0]["location"] == "s3://team-releases/apps/demo/1.0.tar.gz"


def test_a_release_store_must_be_an_s3_address(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, "http://127.0.0.1:1")
    config_path.write_text(
        config_path.read_text().replace("soak = 0\n", 'soak = 0\nreleases = "team-releases"\n')
    )
    with pytest.raises(ConfigError, match=r"services\.demo\.releases"):
        load(config_path)


def test_status_shows_each_colours_release(
    tmp_path: Path, moto_endpoint: str, cloud, source_ami: str, capsys
) -> None:
    app = project(tmp_path, moto_endpoint, cloud, source_ami)
    release(app, application(tmp_path / "one", "one"), "1.0")
    capsys.readouterr()

    assert main(["--config", str(app.config.path), "status", "demo"]) == 0
    shown = capsys.readouterr().out
    assert main(["--config", str(app.config.path), "--json", "status", "demo"]) == 0
    status = json.loads(capsys.readouterr().out)

    live_line = next(line for line in shown.splitlines() if line.startswith("  live:"))
    assert f"ami={source_ami} release=1.0 " in live_line
    assert "release=" not in next(line for line in shown.splitlines() if "standby:" in line)
    assert (status["live"]["release"], status["standby"]["release"]) == ("1.0", None)
    assert (status["rollout"]["release"], status["rollout"]["rollback_release"]) == ("1.0", None)


def test_the_policy_lets_the_pipeline_store_releases_in_each_services_prefix(
    tmp_path: Path,
) -> None:
    from bake import iam

    config_path = write_config(tmp_path, "http://127.0.0.1:1")
    config_path.write_text(
        config_path.read_text().replace("soak = 0\n", f'soak = 0\nreleases = "{STORE}"\n')
    )
    statements = {s["Sid"]: s for s in iam.policy(load(config_path))["Statement"]}

    stored = statements["StoreReleases"]
    assert stored["Action"] == ["s3:GetObject", "s3:PutObject"]
    assert stored["Resource"] == ["arn:aws:s3:::team-releases/apps/demo/*"]
