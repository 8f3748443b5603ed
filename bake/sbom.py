"""An image's installed packages as a CycloneDX SBOM, and the packages read back from one.

A bake publishes the SBOM of what it built; a later planner reads the published SBOM of an AMI to
learn what is installed on it. The document is written by cyclonedx-python-lib and is the same
text for the same input, so publishing it again changes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from packageurl import PackageURL

from bake.errors import InputError
from bake.packages import Package

SCHEMA_VERSION = SchemaVersion.V1_6

# The serial number is uuid5(SERIAL_NAMESPACE, "<digest> <ami>"): one serial per baked image.
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:goldenbake:sbom")
# The timestamp when the caller gives none: the SBOM of an image does not depend on when it was
# written, so re-publishing it must not change it.
UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=UTC)

AMI_PROPERTY = "bake:ami"
DIGEST_PROPERTY = "bake:digest"
KERNEL_PROPERTY = "bake:kernel"
DISTRIBUTION_PROPERTY = "bake:distribution"
# The deb purl type has no qualifier for the source package (only arch, distro, repository_url;
# `arch=source` names a source package itself), so the source goes in properties.
SOURCE_PROPERTY = "bake:source"
SOURCE_VERSION_PROPERTY = "bake:source_version"


def serial_number(digest: str, ami: str) -> uuid.UUID:
    """The SBOM's serial number: the same for the same image digest and AMI."""
    return uuid.uuid5(SERIAL_NAMESPACE, f"{digest} {ami}")


def package_url(package: Package, distribution: str = "debian-12") -> PackageURL:
    """`pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12`."""
    return PackageURL(
        type="deb",
        namespace="debian",
        name=package.name,
        version=package.version,
        qualifiers={"arch": package.architecture, "distro": distribution},
    )


def to_cyclonedx(
    image: str,
    ami: str,
    digest: str,
    packages: list[Package],
    *,
    kernel: str = "",
    distribution: str = "debian-12",
    timestamp: datetime | None = None,
) -> str:
    """The CycloneDX 1.6 JSON SBOM of an image: the image as the described component, each
    package as a library with its deb purl. `timestamp` is the bake's time (default: the epoch,
    so the text depends on nothing but the arguments)."""
    facts = [
        (AMI_PROPERTY, ami),
        (DIGEST_PROPERTY, digest),
        (KERNEL_PROPERTY, kernel),
        (DISTRIBUTION_PROPERTY, distribution),
    ]
    described = Component(
        name=image,
        version=digest[:12] or ami,
        type=ComponentType.OPERATING_SYSTEM,
        bom_ref=f"image:{image}",
        properties=_properties(facts),
    )
    components = [_component(package, distribution) for package in sorted(set(packages))]
    when = timestamp or UNKNOWN_TIME
    bom = Bom(
        serial_number=serial_number(digest, ami),
        metadata=BomMetaData(
            component=described,
            timestamp=when if when.tzinfo else when.replace(tzinfo=UTC),
        ),
        components=components,
    )
    # The image is made of its packages: saying so completes the dependency graph.
    bom.register_dependency(described, components)
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def packages_from_cyclonedx(text: str) -> list[Package]:
    """The Debian packages an SBOM lists (components with a `pkg:deb` purl), sorted."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"the SBOM is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("bomFormat") != "CycloneDX":
        raise InputError("the SBOM is not a CycloneDX document (no bomFormat CycloneDX)")
    try:
        # from_json is added to Bom by py-serializable's decorator, which mypy cannot see.
        bom: Bom = Bom.from_json(data)  # type: ignore[attr-defined]
    except Exception as exc:
        raise InputError(f"the SBOM could not be read as CycloneDX: {exc}") from exc
    return sorted(
        package
        for package in (_package(component) for component in bom.components)
        if package is not None
    )


def _component(package: Package, distribution: str) -> Component:
    purl = package_url(package, distribution)
    return Component(
        name=package.name,
        version=package.version,
        type=ComponentType.LIBRARY,
        purl=purl,
        bom_ref=purl.to_string(),
        properties=_properties(
            [(SOURCE_PROPERTY, package.source), (SOURCE_VERSION_PROPERTY, package.source_version)]
        ),
    )


def _package(component: Component) -> Package | None:
    purl = component.purl
    if purl is None or purl.type != "deb" or not purl.version:
        return None
    properties = {prop.name: prop.value for prop in component.properties}
    qualifiers = purl.qualifiers if isinstance(purl.qualifiers, dict) else {}
    return Package(
        name=purl.name,
        version=purl.version,
        architecture=str(qualifiers.get("arch", "")),
        source=properties.get(SOURCE_PROPERTY) or purl.name,
        source_version=properties.get(SOURCE_VERSION_PROPERTY) or purl.version,
    )


def _properties(pairs: Iterable[tuple[str, str]]) -> list[Property]:
    return [Property(name=name, value=value) for name, value in pairs if value]
