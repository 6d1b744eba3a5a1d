"""In-process decision cost at scale: `python -m bench.decisions` (or `make bench`).

Measures, on one core, each call timed alone:
- the Multus model: parsing a networks annotation (both forms), a NAD with CIDR extraction;
- `/mutate/pods` and `/validate/pods` decisions with 1,000 rules, 10,000 namespaces, 5,000 NADs;
- a baseline in the same run: decoding the same AdmissionReview body (`json.loads`), which
  every request pays anyway, so figures read as ratios too on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from bench.scale import cluster_documents, pod_for
from webhook.admission.review import decode_review
from webhook.cluster.files import FileState
from webhook.decisions.inject import inject_pod
from webhook.decisions.policy import AdmissionPolicy
from webhook.decisions.validate import validate_pod
from webhook.multus.nad import parse_network_attachment
from webhook.multus.networks import parse_network_selections


def measure(calls: int, work: Callable[[int], object]) -> list[float]:
    """Microseconds per call of `work(i)` for i in range(calls), after a short warm-up."""
    for i in range(min(200, calls)):
        work(i)
    samples = []
    for i in range(calls):
        start = time.perf_counter_ns()
        work(i)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def summary(name: str, samples: list[float], baseline: float | None = None) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    ratio = f"{p50 / baseline:.1f}x" if baseline else "1.0x"
    return f"| {name} | {len(samples):,} | {p50:.1f} | {p99:.1f} | {ordered[-1]:.1f} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--namespaces", type=int, default=10_000)
    parser.add_argument("--nads", type=int, default=5_000)
    parser.add_argument("--rules", type=int, default=1_000)
    args = parser.parse_args()

    tracemalloc.start()
    started = time.perf_counter()
    state = FileState(cluster_documents(args.namespaces, args.nads, args.rules))
    load_seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    rng = random.Random(2)
    policy = AdmissionPolicy()
    bodies = []
    for i in range(args.calls):
        request: dict[str, Any] = {
            "uid": f"uid-{i}",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "",
            "object": pod_for(rng, args.namespaces, args.nads),
        }
        request["namespace"] = request["object"]["metadata"]["namespace"]
        bodies.append(
            json.dumps(
                {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
            ).encode()
        )
    requests = [decode_review(body) for body in bodies]
    nad_objects = [
        doc for _, doc in cluster_documents(1, 500, 0) if doc.get("kind") == "NetworkAttachmentDefinition"
    ]

    # Most random Pods get no injection and so no patch; these are the ones that do.
    injected = [r for r in requests if inject_pod(r, state, policy).patch]
    baseline = measure(args.calls, lambda i: json.loads(bodies[i]))
    base_p50 = statistics.median(baseline)
    comma = "kube-system/ipvlan-dp@net1, signal, team-b/oam@oam0"
    as_json = '[{"name": "ipvlan-dp", "namespace": "kube-system", "interface": "net1"}, {"name": "signal"}, {"name": "oam", "namespace": "team-b", "mac": "02:00:00:00:00:0a"}]'
    rows = [
        summary("baseline: json.loads of the review", baseline),
        summary(
            "parse networks, comma form (3)",
            measure(args.calls, lambda i: parse_network_selections(comma, "ns")),
            base_p50,
        ),
        summary(
            "parse networks, JSON form (3)",
            measure(args.calls, lambda i: parse_network_selections(as_json, "ns")),
            base_p50,
        ),
        summary(
            "parse NAD + CIDRs (conflist)",
            measure(args.calls, lambda i: parse_network_attachment(nad_objects[i % len(nad_objects)])),
            base_p50,
        ),
        summary(
            "/mutate/pods decision",
            measure(args.calls, lambda i: inject_pod(requests[i], state, policy)),
            base_p50,
        ),
        summary(
            f"/mutate/pods decision, injected Pods only ({len(injected):,})",
            measure(args.calls, lambda i: inject_pod(injected[i % len(injected)], state, policy)),
            base_p50,
        ),
        summary(
            "/validate/pods decision",
            measure(args.calls, lambda i: validate_pod(requests[i], state, policy)),
            base_p50,
        ),
    ]
    print(
        f"state: {args.namespaces:,} namespaces, {args.nads:,} NADs, {args.rules:,} rules; "
        f"loaded in {load_seconds:.2f} s, peak {peak / 2**20:.0f} MiB traced; "
        f"{len(injected) / len(requests):.0%} of the Pods drawn get a patch"
    )
    print()
    print("| what | calls | p50 µs | p99 µs | max µs | p50 / baseline |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
