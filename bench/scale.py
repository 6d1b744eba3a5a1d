"""Synthetic cluster states at the sizes the benchmarks name, built deterministically."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Mapping
from typing import Any

PROFILES = 200
TEAMS = 500


def _nad(index: int, namespace: str) -> dict[str, Any]:
    third, fourth = divmod(index, 250)
    if index % 3 == 0:
        ipam: dict[str, Any] = {
            "type": "host-local",
            "subnet": f"10.{third % 250}.{fourth}.0/24",
            "rangeStart": f"10.{third % 250}.{fourth}.10",
            "rangeEnd": f"10.{third % 250}.{fourth}.200",
        }
    elif index % 3 == 1:
        ipam = {
            "type": "whereabouts",
            "range": f"172.{16 + third % 16}.{fourth}.0/24",
            "exclude": [f"172.{16 + third % 16}.{fourth}.0/28"],
        }
    else:
        ipam = {"type": "static", "addresses": [{"address": f"192.168.{fourth}.{third % 250 + 1}/24"}]}
    config = {
        "cniVersion": "0.4.0",
        "name": f"net-{index}",
        "plugins": [
            {"type": "ipvlan", "master": "eth1", "mode": "l2", "ipam": ipam},
            {"type": "tuning", "mtu": 9001},
        ],
    }
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {
            "name": f"net-{index}",
            "namespace": namespace,
            "annotations": {"multihome.io/ports": "UDP/2152, TCP/8805, TCP/30000-30100"},
        },
        "spec": {"config": json.dumps(config)},
    }


def _rule(index: int, rng: random.Random, nad_count: int) -> dict[str, Any]:
    profile = f"p{index % PROFILES}"
    selector: dict[str, Any]
    if index % 4 == 0:
        selector = {
            "matchExpressions": [
                {
                    "key": "multihome.io/profile",
                    "operator": "In",
                    "values": [profile, f"p{(index + 7) % PROFILES}"],
                },
                {"key": "frozen", "operator": "DoesNotExist"},
            ]
        }
    else:
        selector = {"matchLabels": {"multihome.io/profile": profile}}
    networks = [
        {"name": f"net-{rng.randrange(nad_count)}", "namespace": "kube-system", "interface": f"r{index}"}
    ]
    return {
        "apiVersion": "multihome.io/v1alpha1",
        "kind": "AttachmentRule",
        "metadata": {"name": f"rule-{index:04d}"},
        "spec": {
            "namespaceSelector": selector,
            "podSelector": {
                "matchExpressions": [
                    {"key": "app", "operator": "In", "values": [f"app{index % 20}", f"app{(index + 1) % 20}"]}
                ]
            },
            "networks": networks,
            "priority": rng.randrange(10),
        },
    }


def cluster_documents(
    namespaces: int = 10_000, nads: int = 5_000, rules: int = 1_000, seed: int = 1
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Namespaces labelled with profiles and teams, NADs (most in kube-system), rules over the profiles."""
    rng = random.Random(seed)
    yield "ns", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}
    for index in range(namespaces):
        labels = {"multihome.io/profile": f"p{index % PROFILES}", "team": f"t{index % TEAMS}"}
        yield (
            "ns",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{index}", "labels": labels}},
        )
    for index in range(nads):
        namespace = "kube-system" if index % 5 else f"ns-{index % namespaces}"
        yield "nad", _nad(index, namespace)
    for index in range(rules):
        yield "rule", _rule(index, rng, nads)


def pod_for(rng: random.Random, namespaces: int, nads: int) -> dict[str, Any]:
    """A Pod as a ReplicaSet creates it: generateName, labels, half of them with their own networks."""
    namespace = f"ns-{rng.randrange(namespaces)}"
    annotations = {}
    if rng.random() < 0.5:
        annotations["k8s.v1.cni.cncf.io/networks"] = f"kube-system/net-{rng.randrange(nads)}@data0"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "app-7d9c8b6f5-",
            "namespace": namespace,
            "labels": {"app": f"app{rng.randrange(20)}", "pod-template-hash": "7d9c8b6f5"},
            "annotations": annotations,
        },
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1.0"}]},
    }
