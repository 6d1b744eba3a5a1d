"""Audit at scale: `python -m bench.audit_scale`.

100,000 Pods, 10,000 NetworkPolicies, 2,000 NADs across 4,000 namespaces: the time to
read the state, to audit it, and the process's peak RSS against its RSS before the
state was built (the baseline of the same run).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from bench.enrichment import documents
from policies.audit import audit, summarize
from webhook.cluster.files import FileState


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespaces", type=int, default=4_000)
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--policies", type=int, default=10_000)
    parser.add_argument("--nads", type=int, default=2_000)
    args = parser.parse_args()
    before = rss_mib()
    started = time.perf_counter()
    state = FileState(documents(args.namespaces, args.pods, args.policies, args.nads))
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    findings = audit(state, state.manifests())
    audited = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("| state | read | audit | findings | peak RSS | RSS before | target |")
    print("| --- | ---: | ---: | --- | ---: | ---: | --- |")
    counts = summarize(findings)
    print(
        f"| {args.pods:,} Pods, {args.policies:,} policies, {args.nads:,} NADs, {args.namespaces:,} namespaces "
        f"| {loaded:.1f} s | {audited:.1f} s | {counts['error']:,} errors, {counts['warning']:,} warnings, {counts['info']:,} info "
        f"| {peak:.0f} MiB | {before:.0f} MiB | audit <= 10 s, <= 1 GB |"
    )


if __name__ == "__main__":
    main()
