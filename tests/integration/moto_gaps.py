"""What moto 5.2 lacks and the pipeline calls, added to the test session's moto server in-process
(test code only; the product calls AWS's API as it is):

- `ImageDeprecation`: EC2's `EnableImageDeprecation` (moto has none), recorded in order with
  `DisableImage`, and the deprecation time answered in `DescribeImages`;
- `ResourceShares`: SSM parameters as a resource RAM shares (moto's list lacks them), and RAM's
  `AssociateResourceShare` and `DisassociateResourceShare` (moto routes neither path), recorded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.ec2.responses import EC2Response
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, convert_to_flask_response
from moto.ram.models import ResourceShare, ram_backends
from moto.ram.responses import ResourceAccessManagerResponse
from werkzeug.routing import Rule


class ImageDeprecation:
    """`calls`: ("EnableImageDeprecation", ami, DeprecateAt as ISO 8601) and ("DisableImage",
    ami, "") in the order the server got them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str, str]] = []
        calls = self.calls
        disable = EC2Response.disable_image

        def enable_image_deprecation(response: EC2Response) -> ActionResult:
            ami, given = response._get_param("ImageId"), response._get_param("DeprecateAt")
            at = given if isinstance(given, str) else given.isoformat()
            calls.append(("EnableImageDeprecation", ami, at))
            image = ec2_backends[response.current_account][response.region].amis[ami]
            image.deprecation_time = at
            return ActionResult({"Return": True})

        def disable_image(response: EC2Response) -> ActionResult:
            calls.append(("DisableImage", response._get_param("ImageId"), ""))
            return disable(response)

        monkeypatch.setattr(
            EC2Response, "enable_image_deprecation", enable_image_deprecation, raising=False
        )
        monkeypatch.setattr(EC2Response, "disable_image", disable_image)


# RAM's REST paths the server routes besides moto's own.
_RAM_PATHS = ("/associateresourceshare", "/disassociateresourceshare")


class ResourceShares:
    """`requests`: (action, parameters) of every AssociateResourceShare and
    DisassociateResourceShare the server got."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        requests = self.requests
        monkeypatch.setattr(
            ResourceShare, "SHAREABLE_RESOURCES", [*ResourceShare.SHAREABLE_RESOURCES, "parameter"]
        )

        def share_of(response: ResourceAccessManagerResponse, params: dict[str, Any]) -> Any:
            backend = ram_backends[response.current_account][response.region]
            return next(s for s in backend.resource_shares if s.arn == params["resourceShareArn"])

        def associate_resource_share(response: ResourceAccessManagerResponse) -> str:
            params = json.loads(response.body)
            requests.append(("AssociateResourceShare", params))
            found = share_of(response, params)
            found.add_principals(params.get("principals", []))
            found.add_resources(params.get("resourceArns", []))
            return json.dumps({"resourceShareAssociations": []})

        def disassociate_resource_share(response: ResourceAccessManagerResponse) -> str:
            params = json.loads(response.body)
            requests.append(("DisassociateResourceShare", params))
            found = share_of(response, params)
            gone = set(params.get("principals", []))
            found.principals = [p for p in found.principals if p not in gone]
            dropped = set(params.get("resourceArns", []))
            found.resource_arns = [r for r in found.resource_arns if r not in dropped]
            return json.dumps({"resourceShareAssociations": []})

        for function in (associate_resource_share, disassociate_resource_share):
            monkeypatch.setattr(
                ResourceAccessManagerResponse, function.__name__, function, raising=False
            )
        original = DomainDispatcherApplication.get_application

        def get_application(dispatcher: DomainDispatcherApplication, environ: Any) -> Any:
            app = original(dispatcher, environ)
            if getattr(app, "service", None) == "ram":
                routed = {rule.rule for rule in app.url_map.iter_rules()}
                view = convert_to_flask_response(ResourceAccessManagerResponse.dispatch)
                for path in _RAM_PATHS:
                    if path not in routed:
                        app.url_map.add(Rule(path, endpoint=f"goldenbake{path}", methods=["POST"]))
                        app.view_functions[f"goldenbake{path}"] = view
            return app

        monkeypatch.setattr(DomainDispatcherApplication, "get_application", get_application)

    def calls(self, action: str) -> list[dict[str, Any]]:
        return [params for name, params in self.requests if name == action]
