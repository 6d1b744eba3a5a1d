"""Live state at scale: `python -m bench.live_state`.

A test API server (tests/fake_apiserver.py, real HTTP on loopback) serves the state;
a child process runs LiveState against it, so the child's RSS is the cache's alone.
Reports time from start to ready and RSS growth per 10,000 objects, against the
child's own RSS before it starts (the baseline of the same run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.scale import cluster_documents
from tests.fake_apiserver import FakeApiServer
from webhook.cluster.live import NADS_PATH, NAMESPACES_PATH, PODS_PATH, RULES_PATH

PATHS = {"Namespace": NAMESPACES_PATH, "NetworkAttachmentDefinition": NADS_PATH, "AttachmentRule": RULES_PATH}


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def child(kubeconfig: str) -> None:
    from webhook.cluster.kube import Endpoint, HttpKubeApi  # noqa: PLC0415
    from webhook.cluster.live import LiveState  # noqa: PLC0415

    before = rss_kib()
    started = time.perf_counter()
    state = LiveState(HttpKubeApi(Endpoint.load(Path(kubeconfig))), watch_timeout=60).start()
    while not state.ready():
        time.sleep(0.01)
    ready = time.perf_counter() - started
    counts = dict(state.counts())
    print(
        json.dumps(
            {"rss_before_kib": before, "rss_after_kib": rss_kib(), "ready_seconds": ready, "counts": counts}
        )
    )
    state.stop(timeout=0.1)


def pod(index: int, namespaces: int) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {
            "namespace": f"ns-{index % namespaces}",
            "name": f"upf-7d9c8b6f5-{index:06d}",
            "uid": f"00000000-0000-0000-0000-{index:012d}",
            "labels": {"app": f"app{index % 20}", "pod-template-hash": "7d9c8b6f5"},
            "annotations": {
                "k8s.v1.cni.cncf.io/networks": "kube-system/net-1@net1,kube-system/net-2",
                "multihome.io/injected-by": "rule-0001",
                "k8s.v1.cni.cncf.io/network-status": json.dumps(
                    [
                        {"name": "aws-cni", "interface": "eth0", "ips": ["192.168.1.5"], "default": True},
                        {"name": "kube-system/net-1", "interface": "net1", "ips": ["10.0.4.71"]},
                    ]
                ),
            },
        },
    }


def run(label: str, documents: list[tuple[str, Any]], pods: int, namespaces: int) -> dict[str, Any]:
    api = FakeApiServer(bookmark_interval=30)
    for _, doc in documents:
        api.put(PATHS[doc["kind"]], doc)
    for index in range(pods):
        api.put(PODS_PATH, pod(index, max(namespaces, 1)))
    api.collections[PODS_PATH].events.clear()  # nothing to replay: the list is the state
    port = api.serve()
    try:
        with tempfile.TemporaryDirectory() as directory:
            kubeconfig = api.kubeconfig(Path(directory), port)
            output = subprocess.run(
                [sys.executable, "-m", "bench.live_state", "--child", str(kubeconfig)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
    finally:
        api.close()
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    result["label"] = label
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", metavar="KUBECONFIG")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    rows = [
        run("empty cluster (baseline)", list(cluster_documents(1, 1, 0)), 0, 1),
        run("10,000 namespaces", list(cluster_documents(10_000, 1, 0)), 0, 10_000),
        run("10,000 multi-homed Pods", list(cluster_documents(1, 1, 0)), 10_000, 1),
        run(
            "10,000 namespaces + 5,000 NADs + 1,000 rules",
            list(cluster_documents(10_000, 5_000, 1_000)),
            0,
            10_000,
        ),
    ]
    base = rows[0]["rss_after_kib"] - rows[0]["rss_before_kib"]
    print("| state | objects | start to ready, s | RSS growth, MiB | over the empty cluster, MiB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        growth = row["rss_after_kib"] - row["rss_before_kib"]
        objects = sum(row["counts"].values())
        print(
            f"| {row['label']} | {objects:,} | {row['ready_seconds']:.2f} | {growth / 1024:.1f} | {(growth - base) / 1024:.1f} |"
        )


if __name__ == "__main__":
    main()
