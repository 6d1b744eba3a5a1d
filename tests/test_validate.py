"""Validate: every EKS rule for Multus, for each kind, under each setting."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.fakes import FakeAuthorizer
from tests.support import make_request, nad, pod
from webhook.admission.review import AdmissionRequest, Decision
from webhook.cluster.files import FileState
from webhook.decisions.policy import AdmissionPolicy, Principal
from webhook.decisions.validate import (
    NamespaceLabels,
    validate_attachment_rule,
    validate_network_attachment,
    validate_pod,
)

NETWORKS = "k8s.v1.cni.cncf.io/networks"
IPVLAN = '{"cniVersion": "0.4.0", "type": "ipvlan", "master": "eth1", "ipam": {"type": "host-local", "subnet": "10.0.4.0/24"}}'
WHEREABOUTS_L3 = '{"cniVersion": "0.4.0", "type": "ipvlan", "master": "eth1", "mode": "l3", "ipam": {"type": "whereabouts", "range": "10.0.31.0/24", "range_start": "10.0.31.10"}}'
IPVLAN_PAST_RESERVED = '{"cniVersion": "0.4.0", "type": "ipvlan", "mode": "l3", "ipam": {"type": "whereabouts", "range": "10.0.4.0/24", "range_start": "10.0.4.10", "network_name": "copy"}}'
DEFAULTS = AdmissionPolicy()
STRICT = AdmissionPolicy(
    unsupported_types="deny", namespace_isolation="strict", missing_networks="deny", default_network="deny"
)
LENIENT = AdmissionPolicy(default_network="warn", namespace_isolation="off")

# (case, settings, NAD, denied?, message fragments)
NAD_CASES: list[tuple[str, AdmissionPolicy, dict[str, Any], bool, list[str]]] = [
    (
        "ipvlan L3 on whereabouts past the reserved addresses",
        DEFAULTS,
        nad("dp-l3", "kube-system", WHEREABOUTS_L3),
        False,
        [],
    ),
    (
        "ipvlan with host-local over the whole subnet",
        DEFAULTS,
        nad("dp", "kube-system", IPVLAN),
        False,
        [
            "spec.config ipam hands out 10.0.4.2, 10.0.4.3, which AWS reserves in every VPC subnet",
            "set rangeStart to 10.0.4.4 or later",
            "spec.config ipam is host-local, which allocates on each node on its own",
        ],
    ),
    (
        "overlapping another NAD: a warning by default",
        DEFAULTS,
        nad("dp-copy", "team-a", IPVLAN_PAST_RESERVED),
        False,
        [
            "hands out 10.0.4.10-10.0.4.254 (245 addresses), which NetworkAttachmentDefinition kube-system/dp hands out too"
        ],
    ),
    (
        "overlapping another NAD with --ip-conflicts deny",
        replace(DEFAULTS, ip_conflicts="deny"),
        nad("dp-copy", "team-a", IPVLAN_PAST_RESERVED),
        True,
        [
            "which NetworkAttachmentDefinition kube-system/dp hands out too, so two Pods can get the same address"
        ],
    ),
    (
        "reserved addresses with --ip-conflicts deny",
        replace(DEFAULTS, ip_conflicts="deny"),
        nad(
            "wide",
            "team-a",
            '{"cniVersion": "0.4.0", "type": "ipvlan", "mode": "l3", "ipam": {"type": "whereabouts", "range": "10.0.30.0/24", "gateway": "10.0.30.1"}}',
        ),
        True,
        [
            "hands out 10.0.30.1, 10.0.30.2, 10.0.30.3, which AWS reserves",
            "hands out its own gateway 10.0.30.1",
            '"exclude_gateway": true',
        ],
    ),
    (
        "a cidrs annotation that disagrees with the IPAM",
        DEFAULTS,
        nad(
            "annotated",
            "team-a",
            WHEREABOUTS_L3.replace("10.0.31", "10.0.32"),
            {"multihome.io/cidrs": "10.0.32.0/16"},
        ),
        False,
        ['multihome.io/cidrs says "10.0.32.0/16" but the IPAM config allocates 10.0.32.10/31'],
    ),
    (
        "aws-cni as a secondary",
        DEFAULTS,
        nad("vpc-secondary", "kube-system", '{"cniVersion": "0.4.0", "type": "aws-cni"}'),
        True,
        [
            'NetworkAttachmentDefinition kube-system/vpc-secondary: spec.config plugin type "aws-cni" is the Amazon VPC CNI, which EKS supports only as the primary network; use ipvlan or host-device for secondary interfaces'
        ],
    ),
    (
        "egress-v4-cni in a conflist",
        DEFAULTS,
        nad("x", "ns", '{"plugins": [{"type": "ipvlan"}, {"type": "egress-v4-cni"}]}'),
        True,
        ['"egress-v4-cni" is the Amazon VPC CNI'],
    ),
    (
        "empty spec named aws-cni",
        DEFAULTS,
        nad("aws-cni", "kube-system", None),
        True,
        ['spec.config is empty and the name "aws-cni"'],
    ),
    (
        "empty spec with another name",
        DEFAULTS,
        nad("on-disk", "kube-system", None),
        False,
        ["reads the config from the node's disk"],
    ),
    ("invalid JSON", DEFAULTS, nad("x", "ns", "{"), True, ["spec.config is not valid JSON"]),
    ("no type", DEFAULTS, nad("x", "ns", '{"master": "eth1"}'), True, ['spec.config has no "type"']),
    (
        "plugins not a list",
        DEFAULTS,
        nad("x", "ns", '{"plugins": "ipvlan"}'),
        True,
        ['"plugins" is a JSON string'],
    ),
    (
        "config not a string",
        DEFAULTS,
        {**nad("x", "ns", None), "spec": {"config": {"type": "ipvlan"}}},
        True,
        ["must be a string holding JSON"],
    ),
    (
        "name not a DNS-1123 label",
        DEFAULTS,
        nad("dp.v2", "ns", IPVLAN),
        True,
        ['metadata.name "dp.v2" is not a DNS-1123 label'],
    ),
    (
        "macvlan warns by default",
        DEFAULTS,
        nad("m", "ns", '{"type": "macvlan", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}'),
        False,
        ["EC2 ENIs drop frames"],
    ),
    (
        "macvlan denied when configured",
        STRICT,
        nad("m", "ns", '{"type": "macvlan"}'),
        True,
        ['plugin type "macvlan" is not supported by EKS'],
    ),
    (
        "sriov warns",
        DEFAULTS,
        nad(
            "s",
            "ns",
            '{"type": "sriov", "ipam": {"type": "static", "addresses": [{"address": "10.2.0.5/24"}]}}',
        ),
        False,
        ["SR-IOV"],
    ),
    (
        "dhcp cannot be enriched",
        DEFAULTS,
        nad("d", "ns", '{"type": "ipvlan", "ipam": {"type": "dhcp"}}'),
        False,
        ["NetworkPolicies cannot be enriched", "multihome.io/cidrs"],
    ),
    (
        "bad ports annotation",
        DEFAULTS,
        nad("p", "ns", IPVLAN, {"multihome.io/ports": "HTTP/80"}),
        True,
        ['port "HTTP/80": protocol must be TCP, UDP or SCTP'],
    ),
    (
        "bad subnet",
        DEFAULTS,
        nad("p", "ns", '{"type": "ipvlan", "ipam": {"type": "host-local", "subnet": "10.0.0.0/99"}}'),
        True,
        ['ipam.subnet "10.0.0.0/99" is not a CIDR'],
    ),
]


def _messages(decision: Decision) -> str:
    return " | ".join([decision.message, *decision.warnings])


@pytest.mark.parametrize(
    ("case", "settings", "obj", "deny", "says"), NAD_CASES, ids=[c[0] for c in NAD_CASES]
)
def test_network_attachment_definitions(
    cluster: FileState, case: str, settings: AdmissionPolicy, obj: dict[str, Any], deny: bool, says: list[str]
) -> None:
    decision = validate_network_attachment(make_request(obj), cluster, settings)
    assert decision.allowed is not deny, _messages(decision)
    for fragment in says:
        assert fragment in _messages(decision)
    if not says:
        assert decision.warnings == ()


def _pod(
    annotations: dict[str, str], namespace: str = "core", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return pod(namespace, labels=labels, annotations=annotations)


POD_CASES: list[tuple[str, AdmissionPolicy, dict[str, Any], bool, list[str]]] = [
    ("no annotations", DEFAULTS, pod(), False, []),
    ("a good network", DEFAULTS, _pod({NETWORKS: "kube-system/dp"}), False, []),
    ("a network in its own namespace", DEFAULTS, _pod({NETWORKS: "local-net"}), False, []),
    (
        "malformed annotation",
        DEFAULTS,
        _pod({NETWORKS: "net1@if1@if2"}),
        True,
        [
            'Pod core/p: metadata.annotations["k8s.v1.cni.cncf.io/networks"] "net1@if1@if2" is invalid: network "net1@if1@if2" has more than one "@"'
        ],
    ),
    ("single JSON object", DEFAULTS, _pod({NETWORKS: '{"name": "dp"}'}), True, ["wrap it in [ ]"]),
    (
        "references the VPC CNI",
        DEFAULTS,
        _pod({NETWORKS: "kube-system/vpc-again"}),
        True,
        ['NetworkAttachmentDefinition kube-system/vpc-again, whose type "aws-cni" is the Amazon VPC CNI'],
    ),
    (
        "references an empty-spec aws-cni",
        DEFAULTS,
        _pod({NETWORKS: "kube-system/aws-cni"}),
        True,
        ["Amazon VPC CNI"],
    ),
    (
        "duplicate interfaces",
        DEFAULTS,
        _pod({NETWORKS: "kube-system/dp@data0, local-net@data0"}),
        True,
        ['gives interface "data0" to more than one network'],
    ),
    (
        "implicit duplicate",
        DEFAULTS,
        _pod({NETWORKS: "kube-system/dp@net2, local-net"}),
        True,
        ['interface "net2"'],
    ),
    (
        "default network denied",
        DEFAULTS,
        _pod({"v1.multus-cni.io/default-network": "calico"}),
        True,
        ["would replace the Amazon VPC CNI with kube-system/calico"],
    ),
    (
        "default network warned",
        LENIENT,
        _pod({"v1.multus-cni.io/default-network": "calico"}),
        False,
        ["would replace the Amazon VPC CNI"],
    ),
    (
        "malformed default network",
        LENIENT,
        _pod({"v1.multus-cni.io/default-network": "a,b"}),
        True,
        ["exactly one"],
    ),
    (
        "VPC multi-NIC is never blocked",
        STRICT,
        _pod({"k8s.amazonaws.com/nicConfig": '[{"networkCard": 1}]'}),
        False,
        [],
    ),
    ("missing NAD warns", DEFAULTS, _pod({NETWORKS: "nope"}), False, ["core/nope, which does not exist"]),
    ("missing NAD denied", STRICT, _pod({NETWORKS: "nope"}), True, ["which does not exist"]),
    (
        "macvlan reference warns",
        DEFAULTS,
        _pod({NETWORKS: "kube-system/mac"}),
        False,
        ['"macvlan" EKS does not support'],
    ),
    (
        "another namespace, not granted, warns",
        DEFAULTS,
        _pod({NETWORKS: "edge/local-net"}),
        False,
        ['in namespace "edge" which no AttachmentRule grants to namespace "core"'],
    ),
    (
        "another namespace, not granted, strict",
        STRICT,
        _pod({NETWORKS: "edge/local-net"}),
        True,
        ["which no AttachmentRule grants"],
    ),
    ("granted by a rule", STRICT, _pod({NETWORKS: "shared-nets/oam"}, labels={"oam": "1"}), False, []),
    (
        "granted by a rule for another Pod only",
        STRICT,
        _pod({NETWORKS: "shared-nets/oam"}),
        True,
        ['"shared-nets"'],
    ),
    ("a global namespace", STRICT, _pod({NETWORKS: "kube-system/dp"}), False, []),
    ("isolation off", LENIENT, _pod({NETWORKS: "edge/local-net"}), False, []),
]


@pytest.mark.parametrize(
    ("case", "settings", "obj", "deny", "says"), POD_CASES, ids=[c[0] for c in POD_CASES]
)
def test_pods(
    cluster: FileState, case: str, settings: AdmissionPolicy, obj: dict[str, Any], deny: bool, says: list[str]
) -> None:
    decision = validate_pod(make_request(obj), cluster, settings)
    assert decision.allowed is not deny, _messages(decision)
    for fragment in says:
        assert fragment in _messages(decision)
    if not says:
        assert decision.warnings == ()


def test_a_pod_update_that_keeps_a_bad_annotation_is_allowed_with_a_warning(cluster: FileState) -> None:
    old = _pod({NETWORKS: "kube-system/vpc-again"})
    new = _pod({NETWORKS: "kube-system/vpc-again", "note": "finalizer removed"})
    decision = validate_pod(make_request(new, operation="UPDATE", old=old), cluster, DEFAULTS)
    assert decision.allowed
    assert any(
        w.startswith("MH011 ") and w.endswith("(allowed: this update does not change it)")
        for w in decision.warnings
    )


def test_a_pod_update_that_changes_to_a_bad_annotation_is_denied(cluster: FileState) -> None:
    old = _pod({NETWORKS: "kube-system/dp"})
    new = _pod({NETWORKS: "kube-system/vpc-again"})
    assert not validate_pod(make_request(new, operation="UPDATE", old=old), cluster, DEFAULTS).allowed


def test_delete_is_never_denied(cluster: FileState) -> None:
    bad = nad("vpc", "kube-system", '{"type": "aws-cni"}')
    assert validate_network_attachment(
        make_request(None, kind="NetworkAttachmentDefinition", operation="DELETE", old=bad), cluster, STRICT
    ).allowed
    bad_pod = _pod({NETWORKS: "a/b/c"})
    assert validate_pod(
        make_request(None, kind="Pod", operation="DELETE", old=bad_pod), cluster, STRICT
    ).allowed


def test_pods_in_ignored_namespaces_are_not_checked(cluster: FileState) -> None:
    assert validate_pod(make_request(_pod({NETWORKS: "a/b/c"}, namespace="legacy")), cluster, STRICT).allowed


def _rule(networks: list[dict[str, Any]], selector: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "multihome.io/v1alpha1",
        "kind": "AttachmentRule",
        "metadata": {"name": "r"},
        "spec": {
            "namespaceSelector": selector
            if selector is not None
            else {"matchLabels": {"multihome.io/profile": "dataplane"}},
            "networks": networks,
        },
    }


RULE_CASES: list[tuple[str, dict[str, Any], bool, list[str]]] = [
    ("a good rule", _rule([{"name": "dp", "namespace": "kube-system"}]), False, []),
    ("no namespace, present where selected", _rule([{"name": "local-net"}]), False, []),
    (
        "no namespace: checked in every namespace the rule selects",
        _rule([{"name": "whatever"}]),
        False,
        [
            "MH022 rule-network-missing: AttachmentRule r: spec.networks[0] gives whatever in the Pod's "
            "namespace, and no NetworkAttachmentDefinition whatever exists in core"
        ],
    ),
    (
        "references the VPC CNI",
        _rule([{"name": "vpc-again", "namespace": "kube-system"}]),
        True,
        [
            "MH021 rule-vpc-cni-reference: AttachmentRule r: spec.networks[0] gives "
            "NetworkAttachmentDefinition kube-system/vpc-again"
        ],
    ),
    (
        "references a missing NAD",
        _rule([{"name": "nope", "namespace": "kube-system"}]),
        False,
        [
            "MH022 rule-network-missing: AttachmentRule r: spec.networks[0] gives "
            "NetworkAttachmentDefinition kube-system/nope, which does not exist"
        ],
    ),
    (
        "selects no namespace",
        _rule([{"name": "dp", "namespace": "kube-system"}], {"matchLabels": {"team": "nobody"}}),
        False,
        ["selects no namespace today"],
    ),
    (
        "invalid selector",
        _rule([{"name": "dp"}], {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
        True,
        ["spec.namespaceSelector.matchExpressions[0].values must be empty"],
    ),
    ("empty networks", _rule([]), True, ["spec.networks must be a non-empty list"]),
    ("bad interface", _rule([{"name": "dp", "interface": "a/b"}]), True, ["interface name"]),
]


@pytest.mark.parametrize(("case", "obj", "deny", "says"), RULE_CASES, ids=[c[0] for c in RULE_CASES])
def test_attachment_rules(
    cluster: FileState, case: str, obj: dict[str, Any], deny: bool, says: list[str]
) -> None:
    decision = validate_attachment_rule(make_request(obj), cluster, DEFAULTS)
    assert decision.allowed is not deny, _messages(decision)
    for fragment in says:
        assert fragment in _messages(decision)
    if not says:
        assert decision.warnings == ()


def _namespace_request(
    new: dict[str, str] | None,
    old: dict[str, str] | None,
    operation: str = "UPDATE",
    username: str = "bob",
    groups: list[str] | None = None,
) -> AdmissionRequest:
    def ns(labels: dict[str, str] | None) -> dict[str, Any] | None:
        return (
            None
            if labels is None
            else {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-c", "labels": labels}}
        )

    return make_request(
        ns(new), kind="Namespace", operation=operation, old=ns(old), username=username, groups=groups
    )


ADMINS = AdmissionPolicy(label_admins=(Principal.parse("group:platform"), Principal.parse("user:carol")))
# What the cluster's RBAC grants (verb label on namespaces.multihome.io): the fake stands in
# for the API server's authorizer, which the real-control-plane tier asks for real.
AUTHORIZER = {"system:masters": {"*"}, "dana": {"team-c"}, "erin": {"team-d"}}
NAMESPACE_CASES: list[tuple[str, AdmissionRequest, bool]] = [
    ("adding a profile", _namespace_request({"multihome.io/profile": "dataplane"}, {}), True),
    (
        "changing a profile",
        _namespace_request({"multihome.io/profile": "x"}, {"multihome.io/profile": "y"}),
        True,
    ),
    ("removing a profile", _namespace_request({}, {"multihome.io/profile": "y"}), True),
    ("setting ignore", _namespace_request({"multihome.io/ignore": "true"}, {}), True),
    ("creating with a profile", _namespace_request({"multihome.io/profile": "x"}, None, "CREATE"), True),
    (
        "other labels are free",
        _namespace_request({"team": "c", "multihome.io/profile": "x"}, {"multihome.io/profile": "x"}),
        False,
    ),
    (
        "a platform group member",
        _namespace_request({"multihome.io/profile": "x"}, {}, groups=["platform"]),
        False,
    ),
    ("a named user", _namespace_request({"multihome.io/profile": "x"}, {}, username="carol"), False),
    (
        "a group named bare",
        _namespace_request({"multihome.io/profile": "x"}, {}, groups=["system:masters"]),
        False,
    ),
    (
        "bound to the ClusterRole for this namespace",
        _namespace_request({"multihome.io/profile": "x"}, {}, username="dana"),
        False,
    ),
    (
        "bound to the ClusterRole for another",
        _namespace_request({"multihome.io/profile": "x"}, {}, username="erin"),
        True,
    ),
    (
        "a user named like the group",
        _namespace_request({"multihome.io/profile": "x"}, {}, username="platform"),
        True,
    ),
    ("delete", _namespace_request(None, {"multihome.io/profile": "x"}, "DELETE"), False),
]


@pytest.mark.parametrize(("case", "request_", "deny"), NAMESPACE_CASES, ids=[c[0] for c in NAMESPACE_CASES])
def test_namespace_labels(cluster: FileState, case: str, request_: AdmissionRequest, deny: bool) -> None:
    decision = NamespaceLabels(FakeAuthorizer(AUTHORIZER))(request_, cluster, ADMINS)
    assert decision.allowed is not deny
    if deny:
        assert decision.message.startswith(
            "MH025 namespace-label-forbidden: Namespace team-c: metadata.labels multihome.io/"
        )
        assert "bind the ClusterRole multihome-label-admin" in decision.message
        assert (
            "--label-admins (chart value policy.labelAdmins; now: group:platform, user:carol)"
            in decision.message
        )


def test_static_label_admins_never_ask_the_authorizer(cluster: FileState) -> None:
    authorizer = FakeAuthorizer()
    request_ = _namespace_request({"multihome.io/profile": "x"}, {}, groups=["platform"])
    assert NamespaceLabels(authorizer)(request_, cluster, ADMINS).allowed
    assert authorizer.asked == []
    other = _namespace_request({"team": "c"}, {}, username="mallory")
    assert NamespaceLabels(authorizer)(other, cluster, ADMINS).allowed
    assert authorizer.asked == [], "only a change of multihome.io/ labels asks"


def test_an_authorizer_that_cannot_be_asked_denies_and_says_why(cluster: FileState) -> None:
    authorizer = FakeAuthorizer(error="the API server's authorizer could not be asked (timed out)")
    request_ = _namespace_request({"multihome.io/profile": "x"}, {}, username="dana")
    decision = NamespaceLabels(authorizer)(request_, cluster, AdmissionPolicy())
    assert not decision.allowed
    assert (
        "multihome could not ask: the API server's authorizer could not be asked (timed out)"
        in decision.message
    )
    assert "now: none" in decision.message
