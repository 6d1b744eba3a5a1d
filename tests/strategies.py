"""Hypothesis strategies for AdmissionReviews that are well formed but adversarial.

Every endpoint gets objects of its own kind whose fields are drawn from values that
matter to the decisions: real and broken network annotations, CNI configs near and
far from valid, selectors with every operator and bad ones, policies with every peer
shape, names of the fixture cluster's namespaces and NADs, and plain garbage.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

NAMESPACES = ["core", "edge", "lab", "plain", "legacy", "kube-system", "shared-nets", "nowhere"]
NADS = ["dp", "signal", "oam", "local-net", "aws-cni", "vpc-again", "mac", "missing"]
LABEL_KEYS = ["app", "role", "oam", "multihome.io/profile", "multihome.io/ignore", "tier", "bad key!", ""]
LABEL_VALUES = ["upf", "smf", "batch", "dataplane", "true", "", "-bad", "x" * 70]

_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON has neither; the API server sends neither
    | st.text(max_size=20)
)
_json = st.recursive(
    _scalar,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=15,
)
_labels = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=4)

_interface = st.sampled_from(["net1", "net2", "data0", "", ".", "..", "eth/1", "a b", "x" * 16, "oam0"])
_element = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(NADS) | st.text(max_size=10) | st.integers(),
        "namespace": st.sampled_from(NAMESPACES) | st.text(max_size=10),
        "interface": _interface,
        "Interface": _interface,
        "interfaceRequest": _interface,
        "mac": st.sampled_from(["02:00:00:00:00:01", "zz", "0200.5e10.0000", ""]) | _scalar,
        "infiniband-guid": st.sampled_from(["c2:11:22:33:44:55:66:77", "nope"]),
        "ips": st.lists(
            st.sampled_from(["10.0.0.1", "10.0.0.1/24", "2001:db8::1", "300.1.1.1", ""]), max_size=3
        )
        | _scalar,
        "default-route": _json,
        "cni-args": _json,
    },
)
_comma_item = st.builds(
    lambda ns, name, iface: (f"{ns}/" if ns else "") + name + (f"@{iface}" if iface else ""),
    st.sampled_from(["", *NAMESPACES, "Bad", "a/b"]),
    st.sampled_from([*NADS, "", "UPPER"]),
    st.sampled_from(["", "net1", "net2", "data0", "x" * 16, "a@b"]),
)
networks_annotation = (
    st.lists(_comma_item, min_size=1, max_size=4).map(", ".join)
    | st.lists(_element, max_size=4).map(json.dumps)
    | _element.map(json.dumps)
    | st.text(max_size=40)
)

_ipam = st.fixed_dictionaries(
    {"type": st.sampled_from(["host-local", "whereabouts", "static", "dhcp", "calico-ipam", ""])},
    optional={
        "subnet": st.sampled_from(["10.0.0.0/24", "10.0.0.0/33", "2001:db8::/64", "nope"]) | _scalar,
        "rangeStart": st.sampled_from(["10.0.0.10", "10.0.1.1", "x"]),
        "rangeEnd": st.sampled_from(["10.0.0.20", "10.0.0.5"]),
        "ranges": st.lists(
            st.lists(
                st.fixed_dictionaries(
                    {"subnet": st.sampled_from(["10.1.0.0/24", "bad"])},
                    optional={"rangeStart": st.just("10.1.0.9")},
                ),
                max_size=2,
            ),
            max_size=2,
        )
        | _json,
        "range": st.sampled_from(
            ["10.10.1.80-10.10.1.82/24", "192.168.2.225/28", "10.0.0.9-10.0.0.1/24", "junk"]
        )
        | _scalar,
        "range_start": st.sampled_from(["10.10.1.81", "9.9.9.9"]),
        "exclude": st.lists(st.sampled_from(["10.10.1.80/32", "bad"]), max_size=2) | _scalar,
        "ipRanges": st.lists(
            st.fixed_dictionaries({"range": st.sampled_from(["10.30.0.0/25", "x"])}), max_size=2
        )
        | _json,
        "addresses": st.lists(
            st.fixed_dictionaries(
                {}, optional={"address": st.sampled_from(["10.0.5.10/24", "zz"]) | _scalar}
            ),
            max_size=2,
        )
        | _json,
    },
)
_plugin = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["ipvlan", "macvlan", "host-device", "aws-cni", "egress-v4-cni", "sriov", "tuning", ""]
        )
        | _scalar
    },
    optional={"master": st.sampled_from(["eth1", ""]), "device": st.just("eth3"), "ipam": _ipam | _json},
)
cni_config = (
    _plugin.map(json.dumps)
    | st.builds(
        lambda plugins: json.dumps({"cniVersion": "0.4.0", "plugins": plugins}),
        st.lists(_plugin, max_size=3) | _json,
    )
    | st.text(max_size=30)
    | _json.map(json.dumps)
)

_expression = st.fixed_dictionaries(
    {},
    optional={
        "key": st.sampled_from(LABEL_KEYS) | _scalar,
        "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "in"]) | _scalar,
        "values": st.lists(st.sampled_from(LABEL_VALUES), max_size=3) | _scalar,
    },
)
selector = (
    st.fixed_dictionaries(
        {},
        optional={
            "matchLabels": _labels | _json,
            "matchExpressions": st.lists(_expression, max_size=3) | _json,
        },
    )
    | _json
)
_peer = st.fixed_dictionaries(
    {},
    optional={
        "podSelector": selector,
        "namespaceSelector": selector,
        "ipBlock": st.fixed_dictionaries(
            {"cidr": st.sampled_from(["10.0.4.0/24", "bad"])}, optional={"except": st.just(["10.0.4.0/28"])}
        ),
    },
)
_rule = st.fixed_dictionaries(
    {},
    optional={
        "from": st.lists(_peer, max_size=3) | _json,
        "to": st.lists(_peer, max_size=3),
        "ports": st.lists(
            st.fixed_dictionaries(
                {"port": st.integers(0, 70000) | st.text(max_size=5)},
                optional={"protocol": st.sampled_from(["TCP", "UDP", "SCTP", "ICMP"])},
            ),
            max_size=2,
        ),
    },
)


def _metadata(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    annotations: dict[str, st.SearchStrategy[Any]] = {}
    if kind == "Pod":
        annotations = {
            "k8s.v1.cni.cncf.io/networks": networks_annotation,
            "v1.multus-cni.io/default-network": networks_annotation,
            "multihome.io/inject": st.sampled_from(["false", "true"]),
        }
    elif kind == "NetworkAttachmentDefinition":
        annotations = {
            "multihome.io/ports": st.sampled_from(["UDP/2152", "TCP/1-65535", "ICMP/1", "TCP/0", ""])
            | st.text(max_size=15),
            "multihome.io/cidrs": st.sampled_from(["10.0.0.0/24", "bad", ""]),
        }
    elif kind == "NetworkPolicy":
        annotations = {
            "multihome.io/enrichment": _json.map(json.dumps) | st.text(max_size=20),
            "multihome.io/enrich": st.sampled_from(["false", "true"]),
        }
    return st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from([*NADS, "p", "Bad_Name", ""]) | _scalar,
            "generateName": st.just("worker-"),
            "namespace": st.sampled_from(NAMESPACES) | _scalar,
            "labels": _labels | _json,
            "annotations": st.fixed_dictionaries({}, optional=annotations) | _json,
            "uid": st.just("1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
        },
    )


def _object(kind: str) -> st.SearchStrategy[Any]:
    spec: st.SearchStrategy[Any]
    if kind == "Pod":
        spec = st.fixed_dictionaries(
            {},
            optional={
                "hostNetwork": st.booleans() | _scalar,
                "containers": st.just([{"name": "c", "image": "i"}]),
            },
        )
    elif kind == "NetworkAttachmentDefinition":
        spec = st.fixed_dictionaries({}, optional={"config": cni_config | _scalar})
    elif kind == "AttachmentRule":
        spec = st.fixed_dictionaries(
            {},
            optional={
                "namespaceSelector": selector,
                "podSelector": selector,
                "networks": st.lists(_element, max_size=3) | _json,
                "priority": st.integers() | _scalar,
            },
        )
    elif kind == "NetworkPolicy":
        spec = st.fixed_dictionaries(
            {},
            optional={
                "podSelector": selector,
                "policyTypes": st.lists(st.sampled_from(["Ingress", "Egress", "Both"]), max_size=2) | _json,
                "ingress": st.lists(_rule, max_size=3) | _json,
                "egress": st.lists(_rule, max_size=2) | _json,
            },
        )
    else:
        spec = _json
    api_version = {
        "AttachmentRule": "multihome.io/v1alpha1",
        "NetworkAttachmentDefinition": "k8s.cni.cncf.io/v1",
        "NetworkPolicy": "networking.k8s.io/v1",
    }.get(kind, "v1")
    return (
        st.fixed_dictionaries(
            {
                "apiVersion": st.just(api_version),
                "kind": st.just(kind),
                "metadata": _metadata(kind) | st.dictionaries(st.text(max_size=8), _json, max_size=3),
                "spec": spec,
            }
        )
        # Always an object with an object for metadata: anything else is a malformed review,
        # answered 400 (tested in test_review.py).
        | st.dictionaries(st.text(max_size=8).filter(lambda key: key != "metadata"), _json, max_size=3)
    )


GROUPS = {
    "Pod": "",
    "Namespace": "",
    "NetworkAttachmentDefinition": "k8s.cni.cncf.io",
    "AttachmentRule": "multihome.io",
    "NetworkPolicy": "networking.k8s.io",
}
ROUTES_BY_KIND = {
    "Pod": ["/mutate/pods", "/validate/pods"],
    "NetworkAttachmentDefinition": ["/validate/networkattachmentdefinitions"],
    "AttachmentRule": ["/validate/attachmentrules"],
    "Namespace": ["/validate/namespaces"],
    "NetworkPolicy": ["/mutate/networkpolicies"],
}


@st.composite
def reviews(draw: st.DrawFn, kind: str | None = None) -> tuple[str, dict[str, Any]]:
    """(path, AdmissionReview) with the object of the path's kind (any, or `kind`), made hostile."""
    kind = kind or draw(st.sampled_from(sorted(ROUTES_BY_KIND)))
    path = draw(st.sampled_from(ROUTES_BY_KIND[kind]))
    request: dict[str, Any] = {
        "uid": draw(st.uuids()).hex,
        "kind": {"group": GROUPS[kind], "version": "v1", "kind": kind},
        "operation": draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"])),
        "object": draw(_object(kind) | st.none()),
    }
    if draw(st.booleans()):
        request["oldObject"] = draw(_object(kind) | st.none())
    if draw(st.booleans()):
        request["namespace"] = draw(st.sampled_from(NAMESPACES))
    if draw(st.booleans()):
        request["userInfo"] = {
            "username": draw(st.sampled_from(["alice", "carol", "system:admin"])),
            "groups": draw(st.lists(st.sampled_from(["system:masters", "platform", "dev"]), max_size=2)),
        }
    return path, {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
