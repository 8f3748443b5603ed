"""The embedded local target: a moto server plays AWS, QEMU plays EC2's machines, and disks live in
a local image store mapped to the AMIs registered in moto."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from bake import releases, ssh
from bake.aws import images, objects
from bake.aws.session import Cloud
from bake.config import Config, ImageConfig, ServiceConfig
from bake.console import Console
from bake.errors import BakeError, InputError
from bake.history import History
from bake.local import basedisk, dataplane, imds, logsink, packagecache, qemu, seed
from bake.local import cloud as local_cloud
from bake.local.machines import read_records
from bake.local.store import ImageStore
from bake.packer import PackerVersion
from bake.records import Built, SourceImage
from bake.runner import Runner
from bake.settings import LocalSettings
from bake.ssh import SshHost
from bake.state import StateDir
from bake.targets.base import RecordResource, Target

PLACEHOLDER_SHA = "0" * 64


class LocalTarget(Target):
    name = "local"
    settings: LocalSettings

    def __init__(
        self, config: Config, state: StateDir, history: History, runner: Runner, console: Console
    ) -> None:
        super().__init__(config, state, history, runner, console)
        self.settings = config.local
        self.store = ImageStore(state.store, history)
        self._cloud: Cloud | None = None
        self._prepared = False
        self._machines_up = False

    @property
    def cloud(self) -> Cloud:
        if self._cloud is None:
            running = local_cloud.up(
                self.runner, self.state, self.settings.region, self.settings.port
            )
            self._cloud = running.cloud()
        return self._cloud

    @cached_property
    def keypair(self) -> tuple[Path, Path]:
        return ssh.ensure_keypair(self.runner, self.state.ssh)

    @cached_property
    def accelerator(self) -> str:
        return qemu.choose_accelerator(self.runner, self.state.local, self.settings.accelerator)

    # rendering and building

    def template(self) -> str:
        return "local.pkr.hcl.j2"

    def template_context(self, image: ImageConfig, packer_version: PackerVersion) -> dict[str, Any]:
        private_key, _ = self.keypair
        return {
            "builder": "qemu",
            # the build machine runs under TCG: render adds the block that speeds it up
            "emulated": self.accelerator == "tcg",
            "mirror": self.settings.mirror,
            "security_mirror": self.settings.security_mirror,
            "local": {
                "accelerator": self.accelerator,
                "memory": self.settings.memory,
                "cpus": self.settings.cpus,
                "ssh_private_key_file": str(private_key),
                "boot_timeout": self.settings.boot_timeout,
            },
        }

    def placeholder_variables(self) -> dict[str, str]:
        scratch = self.state.root / "work" / "validate"
        return {
            "source_disk": str(scratch / "source.qcow2"),
            "source_checksum": f"sha256:{PLACEHOLDER_SHA}",
            "source_ami": "ami-00000000000000000",
            "build_digest": PLACEHOLDER_SHA,
            "run_id": "validate",
            "output_directory": str(scratch / "output"),
            "manifest_path": str(scratch / "manifest.json"),
            "inventory_directory": str(scratch / "inventory"),
        }

    def build_variables(self, work: Path) -> dict[str, str]:
        """Where Packer writes the disk, and the host's package cache the build machine's apt
        goes through."""
        return {
            "output_directory": str(work / "output"),
            "apt_proxy": self.apt_proxy(packagecache.PACKER_GUEST_HOST),
        }

    def apt_proxy(self, guest_host: str) -> str:
        """The host's package cache (started if needed) as the proxy a machine that reaches this
        host at `guest_host` gives apt: shared by every bake, so a day's bakes download each
        package once. A cache that cannot start costs speed, not the build ("": no proxy)."""
        try:
            return packagecache.up(self.runner, self.state).proxy_for(guest_host)
        except BakeError as exc:
            self.console.line(
                f"    package cache unavailable ({exc.message}); machines download from the "
                "mirrors themselves"
            )
            return ""

    def release_store(self, service: ServiceConfig) -> str:
        """The service's `releases`, or the local cloud's own bucket (made when first needed)."""
        store = service.releases or releases.LOCAL_STORE
        objects.ensure_bucket(self.cloud, store.removeprefix("s3://").partition("/")[0])
        return store

    def release_endpoint(self) -> str | None:
        """The local cloud as machines reach it: at QEMU's host address on their network."""
        port = (self.cloud.endpoint_url or "").rsplit(":", 1)[-1]
        return f"http://{qemu.METADATA_GATEWAY}:{port}"

    def suite_environment(self) -> dict[str, str]:
        """The initramfs settings the local base disk gives every image built on it."""
        settings = basedisk.FILE_VARIABLES["etc/initramfs-tools/initramfs.conf"]
        return {"BAKE_EXPECT_INITRAMFS": " ".join(f"{k}={v}" for k, v in settings.items())}

    def chef_package_url(self, url: str) -> str:
        raise InputError(
            f"{url}: an s3:// Chef package can only be fetched on the aws target",
            hint='use an https:// url or method = "omnitruck" locally',
        )

    def packer_environment(self) -> dict[str, str]:
        return {"PACKER_CACHE_DIR": str(self.state.root / "work" / "packer_cache")}

    # the local cloud

    def prepare(self, machines: bool = True) -> None:
        """Start the local cloud if needed, re-seed it if it was restarted, and, with `machines`,
        start the data plane (machines and the load balancer) when the host has the memory it
        needs. A run of an image alone needs no service machines: it leaves them to the next run
        of a service, so they do not compete with the build for the host's cores."""
        start_machines = (
            machines
            and not self._machines_up
            and self.settings.machines
            and bool(self.config.services)
        )
        if start_machines and dataplane.running(self.state) is None:
            dataplane.check_memory(self.config, self.state)  # before anything starts
        if not self._prepared:
            base_ami = self.base_ami()
            if seed.ensure_seeded(self.cloud, self.config, base_ami):
                self.console.line(
                    f"    local cloud at {self.cloud.endpoint_url} seeded (base {base_ami})"
                )
                self._republish_verified()
            self._prepared = True
        if start_machines:
            dataplane.up(
                self.runner,
                self.state,
                self.config,
                self.cloud.endpoint_url or "",
                self.console.line,
            )
            self._machines_up = True

    def base_ami(self, suite: str = "bookworm") -> str:
        """The AMI of the local Debian base disk, building the disk when its inputs changed."""
        _, public_key = self.keypair
        disk = basedisk.build(
            self.runner,
            self.state,
            self.history,
            self.settings,
            public_key,
            suite,
            console_line=self.console.line,
        )
        return self._ami_for(disk.sha256, f"debian-{suite}", {"bake:base": f"debian:{suite}"})

    def _ami_for(self, sha256: str, label: str, tags: dict[str, str]) -> str:
        ami = self.store.ami(sha256)
        if ami and images.describe(self.cloud, ami):
            return ami
        ec2 = self.cloud.client("ec2")
        ami = ec2.register_image(
            Name=f"goldenbake-{label}-{sha256[:16]}",
            Description=f"goldenbake local image {label}, disk sha256:{sha256}",
            Architecture="x86_64",
            RootDeviceName="/dev/xvda",
            VirtualizationType="hvm",
            BlockDeviceMappings=[
                {
                    "DeviceName": "/dev/xvda",
                    "Ebs": {"VolumeSize": self.settings.disk_size_gb, "VolumeType": "gp3"},
                }
            ],
        )["ImageId"]
        images.tag(self.cloud, ami, {"bake:artifact-sha256": sha256, **tags})
        self.store.set_ami(sha256, ami)
        return ami

    def _republish_verified(self) -> None:
        """After a restart of the local cloud, bring back each image's newest verified AMI."""
        for name in self.config.images:
            found = self.history.newest_verified(name)
            if not found or not found.built.artifact or not self.store.exists(found.built.artifact):
                continue
            ami = self._ami_for(found.built.artifact, name, {})
            images.tag_lineage(
                self.cloud,
                ami,
                found.built,
                verified=True,
                kernel=found.kernel,
                run_id=found.run_id,
            )
            images.publish(self.cloud, name, ami)

    def resolve_base(self, image: ImageConfig) -> SourceImage:
        spec = image.base_for(self.name)
        where = f"images.{image.name}.base"
        if spec.kind == "debian":
            ami = self.base_ami(spec.value)
        else:
            ami = images.resolve(self.cloud, spec, where)
        sha256 = self.store.sha_for_ami(ami)
        if sha256 is None or not self.store.exists(sha256):
            raise InputError(
                f"{where}: {ami} has no disk in the local image store {self.store.directory}"
            )
        return SourceImage(
            ami=ami,
            description=f"{spec.describe()} ({ami})",
            variables={
                "source_disk": str(self.store.path(sha256)),
                "source_checksum": f"sha256:{sha256}",
            },
            artifact=sha256,
        )

    def ask_instances(self, instances: list[str], command: str) -> dict[str, tuple[str, str]]:
        """Over SSH to each instance's machine in the data plane, as root with the toolkit's key."""
        machines = {m.instance_id: m for m in read_records(self.state)}
        private_key, _ = self.keypair
        config_file = ssh.write_ssh_config(self.state.ssh)
        answers = {}
        for instance in instances:
            machine = machines.get(instance)
            if machine is None or not machine.ssh_port:
                answers[instance] = ("", "no machine in the local data plane")
                continue
            host = ssh.SshHost("127.0.0.1", machine.ssh_port, "root", private_key, config_file)
            done = ssh.run(self.runner, host, command, check=False, timeout=60)
            error = "" if done.ok else (done.stderr.strip().splitlines() or ["ssh failed"])[-1]
            answers[instance] = (done.stdout, error)
        return answers

    def artifact_of(self, ami: str) -> str | None:
        return self.store.sha_for_ami(ami)

    def keep_artifact(
        self, build: dict[str, Any], image: ImageConfig, digest: str, source: SourceImage
    ) -> Built:
        """The disk Packer wrote goes into the image store."""
        files = build.get("files") or []
        if not files:
            raise BakeError(f"packer's manifest lists no disk for {image.name}")
        sha256 = self.store.put(Path(files[0]["name"]), image.name)
        return Built(image.name, digest, source.ami, artifact=sha256)

    def still_exists(self, built: Built) -> bool:
        return bool(built.artifact) and self.store.exists(built.artifact or "")

    def ensure_ami(self, built: Built) -> str:
        if not built.artifact:
            raise BakeError(f"build {built.digest[:12]} of {built.image} has no local disk")
        return self._ami_for(built.artifact, built.image, {"bake:image": built.image})

    def discard(self, ami: str) -> None:
        """A retired AMI's disk leaves the image store."""
        sha256 = self.store.sha_for_ami(ami)
        if sha256:
            self.store.remove(sha256)

    @contextmanager
    def machine(
        self,
        built: Built,
        image: ImageConfig,
        *,
        run_id: str,
        record: RecordResource,
        instance_profile: str | None = None,
    ) -> Iterator[SshHost]:
        """A QEMU machine on a throwaway overlay of the build's disk, recorded (as a
        `qemu-machine` with its pid) the moment QEMU starts, so that `bake recover` can stop it
        after the run is killed. Its metadata service says it is an instance of the build's AMI,
        as a verification instance on EC2 is; what it ships (the ship-logs step) goes to
        `verify-IMAGE-messages.log` beside its console log in the run's folder."""
        log_path = self.state.run_dir(run_id) / f"verify-{image.name}-console.log"
        private_key, _ = self.keypair
        disk = self.store.path(built.artifact or "")
        with (
            self.state.scratch(f"verify-{image.name}-{run_id}") as work,
            qemu.boot(
                self.runner,
                disk,
                work_dir=work,
                accelerator=self.accelerator,
                memory=self.settings.memory,
                cpus=self.settings.cpus,
                log_path=log_path,
                key=private_key,
                ssh_config=ssh.write_ssh_config(self.state.ssh),
                boot_timeout=self.settings.boot_timeout,
                metadata=self._verification_metadata(built, run_id, work),
                logs=self._verification_logs(log_path.parent, image),
                record=lambda pid: record("qemu-machine", str(pid)),
            ) as vm,
        ):
            yield vm.ssh

    def _verification_logs(self, run_dir: Path, image: ImageConfig) -> str:
        """The collector of a verification machine: into the run's folder, named for the image."""
        try:
            return logsink.command(run_dir, f"verify-{image.name}-messages.log")
        except ValueError as exc:
            raise self._unquotable_state(exc) from None

    def _unquotable_state(self, exc: ValueError) -> InputError:
        """The error for a state directory QEMU's options cannot carry (a collector's or a
        metadata service's command line names a path in it)."""
        return InputError(
            f"state directory {self.state.root}: {exc}",
            hint="use a state directory whose path has no spaces, commas or quotes "
            "(BAKE_STATE_DIR or state_dir in bake.toml)",
        )

    def _verification_metadata(self, built: Built, run_id: str, work: Path) -> str:
        """The metadata service of a verification machine: an instance id of its own, the AMI."""
        document = work / "metadata.json"
        instance_id = "i-" + hashlib.sha256(f"verify {run_id}".encode()).hexdigest()[:17]
        imds.write_document(
            document,
            imds.new_document(
                instance_id=instance_id,
                ami_id=self.ensure_ami(built),
                instance_type=seed.DEFAULT_INSTANCE_TYPE,
                region=self.settings.region,
                availability_zone=f"{self.settings.region}a",
                local_ipv4=qemu.METADATA_GUEST,
                launched=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                user_data=None,
                http_tokens="required",
            ),
        )
        try:
            return imds.command(document)
        except ValueError as exc:
            raise self._unquotable_state(exc) from None
