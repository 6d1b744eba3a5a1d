"""Helpers shared by the tests: fixtures on disk and AdmissionReviews built like the API server's."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

from webhook.admission.review import AdmissionRequest

FIXTURES = Path(__file__).parent / "fixtures"
CLUSTER = FIXTURES / "cluster"

_GVK = {
    "Pod": ("", "v1"),
    "Namespace": ("", "v1"),
    "NetworkAttachmentDefinition": ("k8s.cni.cncf.io", "v1"),
    "AttachmentRule": ("multihome.io", "v1alpha1"),
    "NetworkPolicy": ("networking.k8s.io", "v1"),
}


def load_yaml(name: str) -> Any:
    """A fixture file, parsed."""
    return yaml.safe_load((FIXTURES / name).read_text())


def make_request(
    obj: dict[str, Any] | None,
    *,
    kind: str | None = None,
    operation: str = "CREATE",
    namespace: str | None = None,
    old: dict[str, Any] | None = None,
    username: str = "alice",
    groups: list[str] | None = None,
) -> AdmissionRequest:
    """An AdmissionRequest for `obj` as the API server sends it."""
    kind = kind or str((obj or old or {}).get("kind"))
    group, version = _GVK[kind]
    metadata = (obj or old or {}).get("metadata") or {}
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "operation": operation,
        "userInfo": {"username": username, "groups": groups or ["system:authenticated"]},
        "object": obj,
        "oldObject": old,
    }
    if metadata.get("name"):
        request["name"] = metadata["name"]
    ns = namespace or metadata.get("namespace")
    if ns:
        request["namespace"] = ns
    return request  # type: ignore[return-value]


def make_review(request: AdmissionRequest) -> dict[str, Any]:
    """The whole AdmissionReview wrapping `request`."""
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def pod(
    namespace: str | None = "core",
    *,
    name: str | None = "p",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    host_network: bool = False,
) -> dict[str, Any]:
    """A Pod manifest."""
    metadata: dict[str, Any] = {}
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = "worker-"
    if namespace:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "app:1"}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def nad(
    name: str, namespace: str, config: str | None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A NetworkAttachmentDefinition manifest."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = annotations
    spec = {"config": config} if config is not None else {}
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": metadata,
        "spec": spec,
    }


IPVLAN = '{"cniVersion": "0.4.0", "type": "ipvlan", "master": "eth1", "ipam": {"type": "host-local", "subnet": "10.0.4.0/24"}}'
UPF = {"matchLabels": {"app": "upf"}}


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def rule(name: str, profile: str, *, app: str | None = None, interface: str | None = None) -> dict[str, Any]:
    """An AttachmentRule giving kube-system/dp to the namespaces of `profile` (and Pods app=`app`)."""
    network = {"name": "dp", "namespace": "kube-system"}
    if interface:
        network["interface"] = interface
    spec: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {"multihome.io/profile": profile}},
        "networks": [network],
    }
    if app:
        spec["podSelector"] = {"matchLabels": {"app": app}}
    return {
        "apiVersion": "multihome.io/v1alpha1",
        "kind": "AttachmentRule",
        "metadata": {"name": name},
        "spec": spec,
    }


def dataplane_objects(pod_name: str = "upf") -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) for a namespace on the dataplane profile, its NAD, rule and Pod."""
    return [
        ("/api/v1/namespaces", namespace("core", **{"multihome.io/profile": "dataplane"})),
        ("/apis/k8s.cni.cncf.io/v1/network-attachment-definitions", nad("dp", "kube-system", IPVLAN)),
        ("/apis/multihome.io/v1alpha1/attachmentrules", rule("dataplane", "dataplane")),
        (
            "/api/v1/pods",
            {
                "metadata": {
                    "namespace": "core",
                    "name": pod_name,
                    "labels": {"app": "upf"},
                    "annotations": {"k8s.v1.cni.cncf.io/networks": "kube-system/dp"},
                }
            },
        ),
    ]


def upf_policy(**metadata: str) -> dict[str, Any]:
    """A NetworkPolicy in core: upf Pods may talk to each other."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "upf", "namespace": "core", **metadata},
        "spec": {"podSelector": UPF, "ingress": [{"from": [{"podSelector": UPF}]}]},
    }
