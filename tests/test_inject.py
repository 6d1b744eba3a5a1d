"""Inject: Pod admission adds the networks of the rules that select it (tests/fixtures/cluster)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import webhook.decisions.inject as inject_module
from tests.strategies import NAMESPACES, networks_annotation, reviews
from tests.support import CLUSTER, make_request, nad, pod
from webhook.admission.review import AdmissionRequest, apply_decision
from webhook.cluster.files import FileState, iter_manifests
from webhook.decisions.inject import PodInjector, inject_pod
from webhook.decisions.policy import AdmissionPolicy

NETWORKS = "k8s.v1.cni.cncf.io/networks"
INJECTED_BY = "multihome.io/injected-by"
SETTINGS = AdmissionPolicy()

# (case, Pod, expected networks annotation or None for "no patch", expected injected-by, warning fragment)
CASES: list[tuple[str, dict[str, Any], str | None, str | None, str | None]] = [
    (
        "rules by priority",
        pod(labels={"app": "upf"}),
        "kube-system/dp@net1,kube-system/signal",
        "dataplane,signaling",
        None,
    ),
    ("pod selector leaves one rule out", pod(labels={"app": "amf"}), "kube-system/signal", "signaling", None),
    (
        "the Pod's own interface wins over a rule",
        pod(labels={"app": "upf"}, annotations={NETWORKS: "local-net@net1"}),
        "local-net@net1,kube-system/signal",
        "signaling",
        "interface net1 is already given by the Pod's own annotation",
    ),
    (
        "the higher priority rule wins an interface",
        pod(labels={"app": "smf", "role": "batch"}),
        "kube-system/dp@net1",
        "dataplane",
        "MH024 rule-conflict: AttachmentRule dataplane-fallback: not adding kube-system/signal: interface net1 is already given by AttachmentRule dataplane",
    ),
    (
        "a network the Pod has already is not added twice",
        pod(labels={"app": "amf"}, annotations={NETWORKS: "kube-system/signal@data0"}),
        None,
        None,
        None,
    ),
    (
        "rule network without namespace takes the Pod's",
        pod("edge"),
        "kube-system/signal,local-net",
        "signaling,local",
        None,
    ),
    (
        "JSON when an element needs it",
        pod(labels={"app": "upf", "oam": "yes"}),
        '[{"name":"dp","namespace":"kube-system","interface":"net1"},{"name":"signal","namespace":"kube-system"},'
        '{"name":"oam","namespace":"shared-nets","interface":"oam0","mac":"02:00:00:00:00:0a"}]',
        "dataplane,signaling,oam",
        None,
    ),
    (
        "the Pod's JSON form is kept",
        pod(
            labels={"app": "amf"},
            annotations={NETWORKS: '[{"name": "local-net", "interface": "data0", "x-note": "mine"}]'},
        ),
        '[{"name":"local-net","interface":"data0","x-note":"mine"},{"name":"signal","namespace":"kube-system"}]',
        "signaling",
        None,
    ),
    (
        "an implicit name that an explicit one holds is moved to a free one",
        pod(labels={"app": "amf"}, annotations={NETWORKS: "local-net@net2"}),
        "local-net@net2,kube-system/signal@net1",
        "signaling",
        None,
    ),
    ("DoesNotExist keeps a rule out", pod("lab", labels={"oam": "yes"}), None, None, None),
    ("no rule for the namespace", pod("plain", labels={"app": "upf"}), None, None, None),
    ("namespace labelled ignore", pod("legacy", labels={"app": "upf"}), None, None, None),
    ("namespace not in the state", pod("nowhere", labels={"app": "upf"}), None, None, None),
    ("opt-out", pod(labels={"app": "upf"}, annotations={"multihome.io/inject": "false"}), None, None, None),
    ("hostNetwork", pod(labels={"app": "upf"}, host_network=True), None, None, None),
    (
        "malformed annotation is left for validation",
        pod(labels={"app": "upf"}, annotations={NETWORKS: "a/b/c"}),
        None,
        None,
        "is invalid",
    ),
]


@pytest.mark.parametrize(
    ("case", "obj", "networks", "injected_by", "warning"), CASES, ids=[c[0] for c in CASES]
)
def test_inject(
    cluster: FileState,
    case: str,
    obj: dict[str, Any],
    networks: str | None,
    injected_by: str | None,
    warning: str | None,
) -> None:
    decision = inject_pod(make_request(obj), cluster, SETTINGS)
    assert decision.allowed
    result = apply_decision(obj, decision)
    annotations = result["metadata"].get("annotations", {})
    if networks is None:
        assert not decision.patch
    else:
        assert annotations[NETWORKS] == networks
        assert annotations[INJECTED_BY] == injected_by
    if warning is None:
        assert decision.warnings == ()
    else:
        assert any(warning in w for w in decision.warnings), decision.warnings
    again = inject_pod(make_request(result), cluster, SETTINGS)
    assert not again.patch, "re-running injection on its own output must add nothing"


def test_a_pod_from_a_controller_takes_the_namespace_of_the_request(cluster: FileState) -> None:
    obj = pod(None, name=None, labels={"app": "upf"})
    result = apply_decision(obj, inject_pod(make_request(obj, namespace="core"), cluster, SETTINGS))
    assert result["metadata"]["annotations"][NETWORKS] == "kube-system/dp@net1,kube-system/signal"
    assert result["metadata"]["generateName"] == "worker-"


def test_only_create_is_mutated(cluster: FileState) -> None:
    obj = pod(labels={"app": "upf"})
    assert not inject_pod(make_request(obj, operation="UPDATE", old=obj), cluster, SETTINGS).patch
    assert not inject_pod(
        make_request(None, kind="Pod", operation="DELETE", old=obj), cluster, SETTINGS
    ).patch


def test_the_patch_touches_only_the_annotations(cluster: FileState) -> None:
    obj = pod(labels={"app": "upf"}, annotations={"team": "core"})
    decision = inject_pod(make_request(obj), cluster, SETTINGS)
    paths = {op["path"] for op in decision.patch}
    assert paths == {
        "/metadata/annotations/k8s.v1.cni.cncf.io~1networks",
        "/metadata/annotations/multihome.io~1injected-by",
    }
    result = apply_decision(obj, decision)
    assert result["metadata"]["annotations"]["team"] == "core"
    assert result["spec"] == obj["spec"]


def test_a_rule_network_on_the_vpc_cni_is_never_injected() -> None:
    state = FileState(
        [
            ("ns", {"kind": "Namespace", "metadata": {"name": "t", "labels": {"p": "x"}}}),
            ("nad", nad("vpc", "kube-system", '{"type": "aws-cni"}')),
            ("nad", nad("good", "kube-system", '{"type": "ipvlan"}')),
            (
                "rule",
                {
                    "apiVersion": "multihome.io/v1alpha1",
                    "kind": "AttachmentRule",
                    "metadata": {"name": "bad"},
                    "spec": {
                        "namespaceSelector": {"matchLabels": {"p": "x"}},
                        "networks": [
                            {"name": "vpc", "namespace": "kube-system"},
                            {"name": "good", "namespace": "kube-system"},
                        ],
                    },
                },
            ),
        ]
    )
    obj = pod("t")
    decision = inject_pod(make_request(obj), state, SETTINGS)
    assert apply_decision(obj, decision)["metadata"]["annotations"][NETWORKS] == "kube-system/good"
    assert any("Amazon VPC CNI" in w for w in decision.warnings)


def test_injected_by_keeps_earlier_contributors(cluster: FileState) -> None:
    obj = pod("edge", annotations={INJECTED_BY: "someone-else"})
    result = apply_decision(obj, inject_pod(make_request(obj), cluster, SETTINGS))
    assert result["metadata"]["annotations"][INJECTED_BY] == "someone-else,signaling,local"


def test_the_json_written_is_what_multus_reads(cluster: FileState) -> None:
    obj = pod(labels={"app": "upf", "oam": "1"})
    value = apply_decision(obj, inject_pod(make_request(obj), cluster, SETTINGS))["metadata"]["annotations"][
        NETWORKS
    ]
    assert [e["name"] for e in json.loads(value)] == ["dp", "signal", "oam"]


class Switchable:
    """One state object whose namespaces, rules and NADs each come from one of two file states.

    Swapping one source replaces only those objects, as a live state's cache replaces the
    object of whatever changed.
    """

    def __init__(self, before: FileState) -> None:
        self.before = before
        self.sources = {"namespace": before, "rulebook": before, "nad": before}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sources.get(name, self.before), name)


def documents_of(state_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(where, dict(doc)) for where, doc in iter_manifests(sorted(state_dir.glob("*.yaml")))]


# Pods of the fixture's namespaces with labels its rules select (a fifth of hostile Pods get a patch).
_plain_pods = st.builds(
    lambda namespace, labels, annotations: make_request(
        pod(namespace, name=None, labels=labels, annotations=annotations)
    ),
    st.sampled_from(NAMESPACES),
    st.dictionaries(
        st.sampled_from(["app", "role", "oam"]), st.sampled_from(["upf", "smf", "amf", "batch", "yes"])
    ),
    st.fixed_dictionaries(
        {},
        optional={
            NETWORKS: networks_annotation,
            INJECTED_BY: st.sampled_from(["", "signaling", "x,y"]),
            "multihome.io/inject": st.just("false"),
        },
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(reviews("Pod").map(lambda r: r[1]["request"]) | _plain_pods, min_size=1, max_size=6),
    st.randoms(),
)
def test_remembered_decisions_are_the_decisions(
    cluster: FileState, drawn: list[AdmissionRequest], rng: random.Random
) -> None:
    injector = PodInjector()
    requests = drawn * 2  # every Pod twice: a ReplicaSet's replicas
    rng.shuffle(requests)
    for request in requests:
        assert injector(request, cluster, SETTINGS) == inject_pod(request, cluster, SETTINGS)


def test_identical_pods_are_decided_once(cluster: FileState, monkeypatch: pytest.MonkeyPatch) -> None:
    decided: list[str] = []
    real = inject_module.inject_pod

    def counting(request: Any, state: Any, settings: AdmissionPolicy) -> Any:
        decided.append(request["uid"])
        return real(request, state, settings)

    monkeypatch.setattr(inject_module, "inject_pod", counting)
    injector = PodInjector()
    replicas = [make_request(pod(name=None, labels={"app": "upf"})) for _ in range(5)]
    decisions = [injector(r, cluster, SETTINGS) for r in replicas]
    assert len(decided) == 1 and decisions[0].patch and len(set(map(id, decisions))) == 1
    other = make_request(pod(name=None, labels={"app": "amf"}))
    assert injector(other, cluster, SETTINGS).patch != decisions[0].patch
    assert len(decided) == 2


@pytest.mark.parametrize(
    ("change", "source", "expected"),
    [
        ("the namespace's labels", "namespace", None),
        ("the rules", "rulebook", "kube-system/signal"),
        ("a NAD the rules name", "nad", "kube-system/signal"),
    ],
)
def test_a_change_in_the_state_decides_afresh(change: str, source: str, expected: str | None) -> None:
    docs = documents_of(CLUSTER)
    state = Switchable(FileState(docs))
    injector = PodInjector()
    request = make_request(pod(name=None, labels={"app": "upf"}))
    before = injector(request, state, SETTINGS)  # type: ignore[arg-type]
    assert _networks_after(request, before) == "kube-system/dp@net1,kube-system/signal"
    state.sources[source] = FileState([(where, _changed(doc, change)) for where, doc in docs])
    after = injector(request, state, SETTINGS)  # type: ignore[arg-type]
    assert after == inject_pod(request, state, SETTINGS)  # type: ignore[arg-type]
    assert _networks_after(request, after) == expected


def _networks_after(request: Any, decision: Any) -> str | None:
    if not decision.patch:
        return None
    return str(apply_decision(request["object"], decision)["metadata"]["annotations"][NETWORKS])


def _changed(doc: dict[str, Any], change: str) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    name = doc.get("metadata", {}).get("name")
    if change == "the namespace's labels" and doc["kind"] == "Namespace" and name == "core":
        doc["metadata"]["labels"] = {}
    if change == "the rules" and doc["kind"] == "AttachmentRule" and name == "dataplane":
        doc["spec"]["podSelector"] = {"matchLabels": {"app": "nobody"}}
    if change == "a NAD the rules name" and doc["kind"] == "NetworkAttachmentDefinition" and name == "dp":
        doc["spec"]["config"] = '{"cniVersion":"0.4.0","name":"dp","type":"aws-cni"}'
    return doc


GATED = AdmissionPolicy(readiness_gate=True)
GATE = {"conditionType": "multihome.io/secondary-ips"}


def test_ip_management_gates_a_pod_given_a_vpc_routed_network(cluster: FileState) -> None:
    upf = pod(labels={"app": "upf"})
    request = make_request(upf)
    assert apply_decision(upf, inject_pod(request, cluster, GATED))["spec"]["readinessGates"] == [GATE]
    assert "readinessGates" not in apply_decision(upf, inject_pod(request, cluster, SETTINGS))["spec"]


def test_the_gate_joins_the_pods_own_gates_once(cluster: FileState) -> None:
    own = pod(labels={"app": "upf"})
    own["spec"]["readinessGates"] = [{"conditionType": "example.com/ready"}]
    mutated = apply_decision(own, inject_pod(make_request(own), cluster, GATED))
    assert mutated["spec"]["readinessGates"] == [{"conditionType": "example.com/ready"}, GATE]
    again = apply_decision(mutated, inject_pod(make_request(mutated), cluster, GATED))
    assert again["spec"]["readinessGates"] == [{"conditionType": "example.com/ready"}, GATE]


def test_a_pod_that_names_a_vpc_routed_network_itself_is_gated_without_a_rule(cluster: FileState) -> None:
    named = pod("tenant", annotations={NETWORKS: "kube-system/dp"})
    decision = inject_pod(make_request(named), cluster, GATED)
    assert apply_decision(named, decision)["spec"]["readinessGates"] == [GATE]
    assert inject_pod(make_request(pod("tenant")), cluster, GATED).patch == ()  # no network, no gate
