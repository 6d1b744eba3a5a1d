"""Enrichment at scale: `python -m bench.enrichment`.

50,000 multi-homed Pods across 2,000 namespaces, 5,000 NetworkPolicies, 1,000 NADs.
Policies are of the shapes teams write: ingress from Pods of the same namespace,
from namespaces selected by label, egress to a labelled namespace, and a few to
every namespace. Reports enrichment p50/p99 per policy (one `enrich_policy` call
each, index built once) and a full reconcile pass's decision time; the baseline in
the same run is a deep copy of each policy, which enrichment pays anyway.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
from typing import Any

from policies.enrich import PodNetworks, enrich_policy
from webhook.cluster.files import FileState

APPS = 10


def documents(
    namespaces: int, pods: int, policies: int, nads: int, seed: int = 3
) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    docs: list[tuple[str, dict[str, Any]]] = []
    for index in range(namespaces):
        docs.append(
            (
                "ns",
                {
                    "kind": "Namespace",
                    "metadata": {
                        "name": f"ns-{index}",
                        "labels": {"team": f"t{index % 50}", "tier": ("gold", "silver", "bronze")[index % 3]},
                    },
                },
            )
        )
    for index in range(nads):
        third, fourth = divmod(index, 250)
        config = f'{{"cniVersion":"0.4.0","type":"ipvlan","master":"eth1","ipam":{{"type":"host-local","subnet":"10.{third}.{fourth}.0/24"}}}}'
        annotations = {"multihome.io/ports": "UDP/2152, TCP/8805"} if index % 4 == 0 else {}
        docs.append(
            (
                "nad",
                {
                    "kind": "NetworkAttachmentDefinition",
                    "metadata": {
                        "name": f"net-{index}",
                        "namespace": "kube-system",
                        "annotations": annotations,
                    },
                    "spec": {"config": config},
                },
            )
        )
    for index in range(pods):
        namespace_index = index % namespaces
        app = rng.randrange(APPS)
        networks = f"kube-system/net-{(namespace_index * 7 + app) % nads}@net1,kube-system/net-{(namespace_index * 3 + app) % nads}@net2"
        docs.append(
            (
                "pod",
                {
                    "kind": "Pod",
                    "metadata": {
                        "name": f"p-{index}",
                        "namespace": f"ns-{namespace_index}",
                        "labels": {"app": f"app{app}", "pod-template-hash": "abc"},
                        "annotations": {"k8s.v1.cni.cncf.io/networks": networks},
                    },
                },
            )
        )
    for index in range(policies):
        policy_namespace = f"ns-{index % namespaces}"
        shape = index % 20
        selected = {"matchLabels": {"app": f"app{rng.randrange(APPS)}"}}
        if shape < 12:
            spec: dict[str, Any] = {
                "podSelector": selected,
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"app": f"app{rng.randrange(APPS)}"}}}]}
                ],
            }
        elif shape < 17:
            spec = {
                "podSelector": selected,
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": f"t{rng.randrange(50)}"}},
                                "podSelector": {"matchLabels": {"app": f"app{rng.randrange(APPS)}"}},
                            }
                        ]
                    }
                ],
            }
        elif shape < 19:
            spec = {
                "podSelector": selected,
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"tier": "gold"}}}]}],
            }
        else:
            spec = {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}
        docs.append(
            (
                "policy",
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": f"pol-{index}", "namespace": policy_namespace},
                    "spec": spec,
                },
            )
        )
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespaces", type=int, default=2_000)
    parser.add_argument("--pods", type=int, default=50_000)
    parser.add_argument("--policies", type=int, default=5_000)
    parser.add_argument("--nads", type=int, default=1_000)
    args = parser.parse_args()

    state = FileState(documents(args.namespaces, args.pods, args.policies, args.nads))
    policies = list(state.network_policies())
    started = time.perf_counter()
    index = PodNetworks(state)
    index_seconds = time.perf_counter() - started

    baseline = []
    for policy in policies:
        t = time.perf_counter_ns()
        copy.deepcopy(policy)
        baseline.append((time.perf_counter_ns() - t) / 1e6)
    samples, enriched = [], 0
    started = time.perf_counter()
    for policy in policies:
        t = time.perf_counter_ns()
        result = enrich_policy(policy, state, index)
        samples.append((time.perf_counter_ns() - t) / 1e6)
        enriched += result.record is not None
    pass_seconds = time.perf_counter() - started

    def row(name: str, values: list[float]) -> str:
        ordered = sorted(values)
        p50, p99 = statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]
        return f"| {name} | {p50:.3f} | {p99:.3f} | {ordered[-1]:.3f} | {p50 / statistics.median(baseline):.1f}x |"

    print(
        f"state: {args.pods:,} Pods in {args.namespaces:,} namespaces, {args.policies:,} policies, {args.nads:,} NADs; "
        f"Pod network index built in {index_seconds:.2f} s; {enriched:,} policies enriched"
    )
    print()
    print("| what | p50 ms | p99 ms | max ms | p50 / baseline |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(row("baseline: deepcopy of the policy", baseline))
    print(row("enrich_policy", samples))
    print()
    print(
        f"full pass over {len(policies):,} policies (decisions only, no API writes): {pass_seconds:.2f} s + index {index_seconds:.2f} s"
    )


if __name__ == "__main__":
    main()
