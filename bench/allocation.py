"""IP address safety at cluster scale: the overlap sweep over 5,000 NADs, and one admission.

    python -m bench.allocation [--nads 5000] [--repeat 5]

NADs as a large EKS cluster has them: /24s and /22s of 10.0.0.0/8, host-local and whereabouts,
narrowed ranges and whole subnets, one in ten an identical copy of another under a second
name (the common mistake). Reports, median of the repeats: parsing the NADs (once, as the
live cache does), the whole-cluster overlap sweep the audit runs, one NAD admitted against
all the others, and the same sweep against an all-pairs comparison on 1,000 NADs (the
baseline, in the same process).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from itertools import combinations
from typing import Any

from webhook.decisions.allocation import PoolBounds, PoolBoundsCache, find_overlaps, overlaps_with
from webhook.multus.nad import NetworkAttachment, parse_network_attachment


def manifests(count: int, rng: random.Random) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for index in range(count):
        if docs and rng.random() < 0.1:
            copy = json.loads(json.dumps(rng.choice(docs)))
            copy["metadata"] = {"name": f"copy-{index}", "namespace": f"team-{index % 500}"}
            docs.append(copy)
            continue
        prefix = rng.choice([24, 24, 24, 22])
        base = rng.randrange(0, 2**24 >> (32 - prefix)) << (32 - prefix)
        subnet = f"10.{base >> 16 & 255}.{base >> 8 & 255}.0/{prefix}"
        first = f"10.{base >> 16 & 255}.{base >> 8 & 255}.{rng.randrange(4, 100)}"
        if rng.random() < 0.5:
            ipam: dict[str, Any] = {"type": "host-local", "subnet": subnet}
            if rng.random() < 0.7:
                ipam["rangeStart"] = first
        else:
            ipam = {"type": "whereabouts", "range": subnet, "network_name": f"net-{index}"}
            if rng.random() < 0.7:
                ipam["range_start"] = first
        config = {"cniVersion": "0.4.0", "type": "ipvlan", "master": "eth1", "mode": "l3", "ipam": ipam}
        docs.append(
            {
                "apiVersion": "k8s.cni.cncf.io/v1",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": f"net-{index}", "namespace": f"team-{index % 500}"},
                "spec": {"config": json.dumps(config)},
            }
        )
    return docs


def all_pairs(nads: list[NetworkAttachment]) -> int:
    """The baseline: every pair of pools compared span by span."""
    found = 0
    for a, b in combinations(nads, 2):
        for p in a.pools:
            for q in b.pools:
                if p.version != q.version or (p.store is not None and p.store == q.store):
                    continue
                if any(f1 <= l2 and f2 <= l1 for f1, l1 in p.spans for f2, l2 in q.spans):
                    found += 1
    return found


def timed(repeat: int, work: Callable[[], object]) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nads", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(17)
    docs = manifests(args.nads, rng)
    started = time.perf_counter()
    nads = [parse_network_attachment(doc) for doc in docs]
    parse = time.perf_counter() - started
    overlaps = find_overlaps(nads)
    sweep = timed(args.repeat, lambda: find_overlaps(nads))
    newcomer = nads[rng.randrange(len(nads))]
    # As the webhook admits: the index of the NADs is kept between admissions, and each
    # admission checks that the NADs are still the ones it was built from.
    index_build = timed(args.repeat, lambda: PoolBounds(nads))
    kept = PoolBoundsCache()
    admission = timed(args.repeat, lambda: overlaps_with(newcomer, kept.of(nads)))
    small = nads[:1000]
    small_sweep = timed(args.repeat, lambda: find_overlaps(small))
    baseline = timed(1, lambda: all_pairs(small))
    print(
        f"{args.nads:,} NADs, {sum(len(n.pools) for n in nads):,} pools, {len(overlaps):,} overlapping pairs"
    )
    print("| what | median |")
    print("| --- | ---: |")
    print(f"| parse {args.nads:,} NADs (once, as the cache does) | {parse * 1e3:,.0f} ms |")
    print(f"| overlap sweep over {args.nads:,} NADs (audit) | {sweep * 1e3:,.0f} ms |")
    print(f"| one NAD admitted against {args.nads:,} (webhook) | {admission * 1e3:,.2f} ms |")
    print(
        f"| the index of {args.nads:,} NADs' pool bounds (when the NADs change) | {index_build * 1e3:,.1f} ms |"
    )
    print(f"| overlap sweep over 1,000 NADs | {small_sweep * 1e3:,.1f} ms |")
    print(f"| all pairs over 1,000 NADs (baseline) | {baseline * 1e3:,.0f} ms |")
    print(f"\nthe sweep is {baseline / small_sweep:,.0f}x faster than all pairs at 1,000 NADs")


if __name__ == "__main__":
    main()
