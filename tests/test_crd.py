"""The AttachmentRule CRD's schema agrees with the rule parser on real and broken rules."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml

from tests.server import ROOT
from tests.support import CLUSTER
from webhook.rules import parse_rule

CRD = yaml.safe_load((ROOT / "chart" / "crds" / "attachmentrules.multihome.io.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _as_json_schema(node: Any) -> Any:
    """OpenAPI v3 structural schema to JSON Schema: drop the Kubernetes extensions."""
    if isinstance(node, dict):
        return {
            k: _as_json_schema(v)
            for k, v in node.items()
            if not k.startswith("x-kubernetes-") and k != "format"
        }
    if isinstance(node, list):
        return [_as_json_schema(v) for v in node]
    return node


VALIDATOR = jsonschema.Draft7Validator(_as_json_schema(SCHEMA))
RULES = [
    doc
    for path in (CLUSTER / "rules.yaml", ROOT / "examples" / "cluster" / "rules.yaml")
    for doc in yaml.safe_load_all(path.read_text())
]


def test_the_crd_names_and_columns() -> None:
    assert CRD["metadata"]["name"] == "attachmentrules.multihome.io"
    assert CRD["spec"]["scope"] == "Cluster"
    version = CRD["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Ready",
        "Namespaces",
        "Selector",
        "Reason",
        "Networks",
        "Priority",
        "Age",
    ]
    jsonschema.Draft7Validator.check_schema(_as_json_schema(SCHEMA))


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r["metadata"]["name"])
def test_real_rules_are_accepted_by_both(rule: dict[str, Any]) -> None:
    VALIDATOR.validate(rule)
    parse_rule(rule)


def _broken(change: str) -> dict[str, Any]:
    rule: dict[str, Any] = copy.deepcopy(RULES[0])
    spec = rule["spec"]
    if change == "no selector":
        del spec["namespaceSelector"]
    elif change == "no networks":
        del spec["networks"]
    elif change == "empty networks":
        spec["networks"] = []
    elif change == "network without name":
        spec["networks"] = [{"namespace": "kube-system"}]
    elif change == "bad operator":
        spec["namespaceSelector"] = {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}
    elif change == "long interface":
        spec["networks"][0]["interface"] = "x" * 16
    elif change == "priority not integer":
        spec["priority"] = "high"
    return rule


@pytest.mark.parametrize(
    "change",
    [
        "no selector",
        "no networks",
        "empty networks",
        "network without name",
        "bad operator",
        "long interface",
        "priority not integer",
    ],
)
def test_broken_rules_are_rejected_by_both(change: str) -> None:
    rule = _broken(change)
    assert list(VALIDATOR.iter_errors(rule)), f"the CRD schema accepts a rule with {change}"
    with pytest.raises(ValueError):
        parse_rule(rule)
