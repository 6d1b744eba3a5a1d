"""AttachmentRule status: Ready with its reason, and the namespaces a rule selects, from the fixture cluster."""

from __future__ import annotations

from typing import Any

import pytest

from policies.controllers.rule_status import rule_status
from webhook.cluster.files import FileState

NOW, LATER = "2026-11-29T10:00:00Z", "2026-11-29T11:00:00Z"


def rule(
    networks: list[dict[str, str]], selector: dict[str, Any] | None = None, generation: int = 3
) -> dict[str, Any]:
    return {
        "apiVersion": "multihome.io/v1alpha1",
        "kind": "AttachmentRule",
        "metadata": {"name": "r", "generation": generation},
        "spec": {
            "namespaceSelector": selector or {"matchLabels": {"multihome.io/profile": "dataplane"}},
            "networks": networks,
        },
    }


CASES = [
    (
        "a shared network that exists",
        rule([{"name": "dp", "namespace": "kube-system"}]),
        "True",
        "Ready",
        1,
        "gives 1 network in 1 namespace",
    ),
    (
        "a network in each selected namespace, one missing",
        rule(
            [{"name": "local-net"}],
            {"matchExpressions": [{"key": "multihome.io/profile", "operator": "Exists"}]},
        ),
        "False",
        "NetworkMissing",
        3,
        "MH022 rule-network-missing: spec.networks[0] gives local-net in the Pod's namespace, and no NetworkAttachmentDefinition local-net exists in lab",
    ),
    (
        "the VPC CNI by an empty spec's name",
        rule([{"name": "aws-cni", "namespace": "kube-system"}]),
        "False",
        "VpcCniReference",
        1,
        "kube-system/aws-cni",
    ),
    (
        "a spec that does not compile",
        rule([{"name": "Not A Label"}]),
        "False",
        "InvalidSpec",
        0,
        "Not A Label",
    ),
    (
        "selects nothing: the ignored namespace does not count",
        rule([{"name": "dp", "namespace": "kube-system"}], {"matchLabels": {"multihome.io/ignore": "true"}}),
        "True",
        "Ready",
        0,
        "in 0 namespaces",
    ),
]


@pytest.mark.parametrize(
    ("case", "obj", "ready", "reason", "matched", "says"), CASES, ids=[c[0] for c in CASES]
)
def test_rule_status(
    cluster: FileState, case: str, obj: dict[str, Any], ready: str, reason: str, matched: int, says: str
) -> None:
    status = rule_status(obj, cluster, NOW)
    (condition,) = status["conditions"]
    assert (condition["status"], condition["reason"], status["matchedNamespaces"]) == (ready, reason, matched)
    assert says in condition["message"]
    assert status["observedGeneration"] == condition["observedGeneration"] == 3
    assert condition["lastTransitionTime"] == NOW


def test_the_transition_time_holds_while_the_status_does(cluster: FileState) -> None:
    obj = rule([{"name": "dp", "namespace": "kube-system"}])
    obj["status"] = rule_status(obj, cluster, NOW)
    assert rule_status(obj, cluster, LATER) == obj["status"], "nothing changed: nothing to write"
    obj["spec"]["networks"] = [{"name": "gone", "namespace": "kube-system"}]
    assert rule_status(obj, cluster, LATER)["conditions"][0]["lastTransitionTime"] == LATER
