"""template.yaml and the apps agree: API Gateway has a resource for every Chalice route (Chalice dispatches on the
resource path, so a missing one would 403 on AWS while every local test passes)."""

from __future__ import annotations

from pathlib import Path

import yaml

from imgsearch.local import load_function

REPO = Path(__file__).resolve().parents[2]


class CloudFormationLoader(yaml.SafeLoader):
    """Reads !Ref, !Sub, !If ... as plain values; we only look at the structure."""


CloudFormationLoader.add_multi_constructor("!", lambda loader, suffix, node: (
    loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
    else loader.construct_mapping(node) if isinstance(node, yaml.MappingNode) else loader.construct_scalar(node)))


def template() -> dict:
    return yaml.load((REPO / "template.yaml").read_text(), Loader=CloudFormationLoader)


def test_every_chalice_route_has_an_api_gateway_resource_and_nothing_else():
    app = load_function("search").app
    paths = template()["Resources"]["SearchApi"]["Properties"]["DefinitionBody"]["paths"]
    declared = {(path, method.upper()) for path, methods in paths.items() for method in methods}
    routed = {(path, method) for path, entries in app.routes.items() for method in entries}
    assert declared == routed


def test_only_the_page_and_health_are_public_when_an_api_key_is_set():
    paths = template()["Resources"]["SearchApi"]["Properties"]["DefinitionBody"]["paths"]
    public = {path for path, methods in paths.items() for m in methods.values() if "security" not in m}
    assert public == {"/", "/health"}
    assert public == {path for _, path in load_function("search").PUBLIC_ROUTES}


def test_extract_function_reports_partial_batch_failures_from_the_queue():
    resources = template()["Resources"]
    extract = next(r for r in resources.values() if r["Type"] == "AWS::Serverless::Function"
                   and r["Metadata"].get("DockerTag") == "extract")
    sqs_events = [e for e in extract["Properties"]["Events"].values() if e["Type"] == "SQS"]
    assert sqs_events and sqs_events[0]["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert extract["Properties"]["PackageType"] == "Image"
