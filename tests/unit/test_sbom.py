"""The SBOM of an image: valid CycloneDX, deterministic, and read back to the same packages."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from bake.errors import InputError
from bake.packages import Package
from bake.sbom import packages_from_cyclonedx, serial_number, to_cyclonedx

DIGEST = "3f2a9c41b07de5a8c2d4e6f80a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
AMI = "ami-0123456789abcdef0"
PACKAGES = [
    Package("libc6", "2.36-9+deb12u9", "amd64", "glibc", "2.36-9+deb12u9"),
    Package("base-files", "12.4+deb12u8", "amd64", "base-files", "12.4+deb12u8"),
    Package("libattr1", "1:2.5.1-4", "amd64", "attr", "1:2.5.1-4"),
    Package("tzdata", "2024b-0+deb12u1", "all", "tzdata", "2024b-0+deb12u1"),
    # A binNMU: the binary version differs from its source's.
    Package("libgcrypt20", "1.10.1-3+b1", "amd64", "libgcrypt20", "1.10.1-3"),
]


def _sbom(
    *,
    ami: str = AMI,
    digest: str = DIGEST,
    packages: list[Package] = PACKAGES,
    timestamp: datetime | None = None,
) -> str:
    return to_cyclonedx(
        "base", ami, digest, packages, kernel="6.1.0-28-cloud-amd64", timestamp=timestamp
    )


def test_the_sbom_validates_against_the_cyclonedx_schema() -> None:
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    error = validator.validate_str(_sbom())
    assert error is None, getattr(error, "data", error)


def test_the_validator_rejects_a_broken_document() -> None:
    # The check above would be worthless if the validator accepted anything.
    document = json.loads(_sbom())
    document["components"][0]["type"] = "rpm"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document)) is not None


def test_the_metadata_component_is_the_image() -> None:
    document = json.loads(_sbom())
    assert document["specVersion"] == "1.6"
    image = document["metadata"]["component"]
    assert image["name"] == "base"
    assert image["version"] == DIGEST[:12]
    properties = {prop["name"]: prop["value"] for prop in image["properties"]}
    assert properties["bake:ami"] == AMI
    assert properties["bake:digest"] == DIGEST
    assert properties["bake:kernel"] == "6.1.0-28-cloud-amd64"


def test_an_image_without_a_digest_is_versioned_by_its_ami() -> None:
    document = json.loads(_sbom(digest=""))
    assert document["metadata"]["component"]["version"] == AMI


def test_each_package_is_a_library_with_its_deb_purl_and_source() -> None:
    document = json.loads(_sbom())
    components = {component["name"]: component for component in document["components"]}
    assert sorted(components) == sorted(package.name for package in PACKAGES)
    libc = components["libc6"]
    assert libc["type"] == "library"
    assert libc["version"] == "2.36-9+deb12u9"
    assert libc["purl"] == "pkg:deb/debian/libc6@2.36-9%2Bdeb12u9?arch=amd64&distro=debian-12"
    assert libc["bom-ref"] == libc["purl"]
    properties = {prop["name"]: prop["value"] for prop in libc["properties"]}
    assert properties == {"bake:source": "glibc", "bake:source_version": "2.36-9+deb12u9"}
    # An epoch survives in the purl.
    attr = PackageURL.from_string(components["libattr1"]["purl"])
    assert attr.version == "1:2.5.1-4"


def test_the_image_depends_on_every_package() -> None:
    document = json.loads(_sbom())
    graph = {entry["ref"]: entry.get("dependsOn", []) for entry in document["dependencies"]}
    refs = {component["bom-ref"] for component in document["components"]}
    assert set(graph["image:base"]) == refs


def test_the_packages_read_back_are_the_packages_written() -> None:
    assert packages_from_cyclonedx(_sbom()) == sorted(PACKAGES)


def test_reading_skips_components_that_are_not_debian_packages() -> None:
    document = json.loads(_sbom())
    document["components"].append(
        {"type": "library", "name": "requests", "version": "2.32.3", "bom-ref": "py-requests",
         "purl": "pkg:pypi/requests@2.32.3"}
    )  # fmt: skip
    assert packages_from_cyclonedx(json.dumps(document)) == sorted(PACKAGES)


def test_reading_a_document_without_source_properties_takes_the_binary_as_its_source() -> None:
    document = json.loads(_sbom(packages=[PACKAGES[0]]))
    del document["components"][0]["properties"]
    [package] = packages_from_cyclonedx(json.dumps(document))
    assert (package.source, package.source_version) == ("libc6", "2.36-9+deb12u9")


def test_the_same_input_gives_the_same_text() -> None:
    first = _sbom()
    assert _sbom(packages=list(reversed(PACKAGES))) == first
    document = json.loads(first)
    assert document["serialNumber"] == serial_number(DIGEST, AMI).urn
    assert document["metadata"]["timestamp"].startswith("1970-01-01T00:00:00")


def test_another_ami_or_digest_gives_another_serial_number() -> None:
    serials = {
        json.loads(_sbom(ami=ami, digest=digest))["serialNumber"]
        for ami, digest in [(AMI, DIGEST), ("ami-0fedcba9876543210", DIGEST), (AMI, "0" * 64)]
    }
    assert len(serials) == 3


def test_a_given_timestamp_is_written() -> None:
    built = datetime(2024, 11, 5, 9, 30, tzinfo=UTC)
    document = json.loads(_sbom(timestamp=built))
    assert datetime.fromisoformat(document["metadata"]["timestamp"]) == built


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"bomFormat": "SPDX"}'],
)
def test_reading_something_that_is_not_an_sbom_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError):
        packages_from_cyclonedx(text)
