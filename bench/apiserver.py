"""Pod CREATE latency through a real kube-apiserver: no webhooks, the floor, and multihome.

    KUBEBUILDER_ASSETS=.envtest/bin python -m bench.apiserver [--pods 200] [--rounds 3]

One control plane (etcd + kube-apiserver v1.28 from KUBEBUILDER_ASSETS, as in `make envtest`),
one client on a keep-alive connection creating Pods one after another in a namespace that
multihome injects into. Three set-ups, alternated round by round in the same run:
- none: no admission webhooks;
- floor: two always-allow webhooks (mutating and validating) served by `bench.floor`, the same
  gunicorn, TLS, Flask and review decoding as multihome with a constant decision;
- multihome: its two Pod webhooks (`/mutate/pods`, which injects, and `/validate/pods`) on
  `serve` against the same API server.
Both servers run as the chart runs them: its default workers and threads (1 x 4), log level info.
With `--file-state`, a fourth set-up: multihome on the same objects read from files, with no
watches on the API server, to show what watching costs the reviews. With `--patching-floor`,
one more: the floor's mutating webhook answers with a constant patch of the two annotations an
injection writes, to show what the API server's own work on a mutated Pod costs.
Reports p50 and p99 per set-up (median over rounds) and what the webhooks add to `none`.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from bench.load import server
from tests.envtest.chart import CRDS
from tests.envtest.controlplane import ControlPlane, assets_directory
from tests.server import issue_certificates
from webhook.cluster.kube import Endpoint, HttpKubeApi
from webhook.server.settings import ServeSettings

NAMESPACE = "bench"
NAD = '{"cniVersion": "0.4.0", "type": "ipvlan", "master": "eth1", "ipam": {"type": "host-local", "subnet": "10.0.4.0/24"}}'


def webhooks(name: str, port: int, mutate: str, validate: str, ca: bytes) -> list[dict[str, Any]]:
    """A mutating and a validating configuration for Pod CREATE, by URL."""
    bundle = base64.b64encode(ca).decode()
    common = {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "timeoutSeconds": 3,
        "failurePolicy": "Fail",
        "rules": [
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
        ],
    }
    configurations = []
    for kind, path in (
        ("MutatingWebhookConfiguration", mutate),
        ("ValidatingWebhookConfiguration", validate),
    ):
        hook = {"name": f"{kind.lower()[:8]}.{name}.bench", **common}
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}
        configurations.append(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": kind,
                "metadata": {"name": f"bench-{name}", "labels": {"bench": "true"}},
                "webhooks": [hook],
            }
        )
    return configurations


def use(plane: ControlPlane, configurations: list[dict[str, Any]]) -> None:
    """Replace the bench's webhook configurations; the API server picks them up within a second."""
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        plane.kubectl("delete", kind, "-l", "bench=true", "--ignore-not-found")
    if configurations:
        plane.apply(*configurations)
    time.sleep(2)


def round_latencies(api: HttpKubeApi, pods: int, tag: str, expect_injection: bool) -> list[float]:
    """Create `pods` Pods one by one; seconds each, from request to response."""
    latencies = []
    for index in range(pods):
        name = f"{tag}-{index}"
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "upf"}},
            "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
        }
        started = time.perf_counter()
        created = api.write("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body)
        latencies.append(time.perf_counter() - started)
        annotations = created.get("metadata", {}).get("annotations") or {}
        if expect_injection and "k8s.v1.cni.cncf.io/networks" not in annotations:
            raise AssertionError(f"{tag}: multihome did not inject into {name}")
    api.write("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods", None)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=200, help="Pods created per round and set-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--file-state", action="store_true", help="add multihome on a file state")
    parser.add_argument("--patching-floor", action="store_true", help="add a floor that patches")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="multihome-bench-") as scratch:
        work = Path(scratch)
        with ControlPlane(assets_directory(), work / "cluster") as plane:
            plane.kubectl("apply", *[a for crd in CRDS for a in ("-f", str(crd))])
            plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
            objects = (
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": NAMESPACE, "labels": {"multihome.io/profile": "dataplane"}},
                },
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "default", "namespace": NAMESPACE},
                },
                {
                    "apiVersion": "k8s.cni.cncf.io/v1",
                    "kind": "NetworkAttachmentDefinition",
                    "metadata": {"name": "dp", "namespace": "kube-system"},
                    "spec": {"config": NAD},
                },
                {
                    "apiVersion": "multihome.io/v1alpha1",
                    "kind": "AttachmentRule",
                    "metadata": {"name": "dataplane"},
                    "spec": {
                        "namespaceSelector": {"matchLabels": {"multihome.io/profile": "dataplane"}},
                        "networks": [{"name": "dp", "namespace": "kube-system"}],
                    },
                },
            )
            plane.apply(*objects)
            (work / "state").mkdir()
            (work / "state" / "objects.yaml").write_text(yaml.safe_dump_all(objects))
            issue_certificates(work / "certs")
            ca = (work / "certs" / "ca.crt").read_bytes()
            multihome_cmd = ["webhook", "serve", "--kubeconfig", str(plane.kubeconfig)]
            workers, threads = ServeSettings().workers, ServeSettings().threads
            file_cmd = ["webhook", "serve", "--state", str(work / "state")]
            with ExitStack() as stack:
                ports = {
                    name: stack.enter_context(
                        server(command, work / "certs", workers, work / f"{name}.log", "info", threads)
                    )[0]
                    for name, command in (
                        ("floor", ["bench.floor"]),
                        ("multihome", multihome_cmd),
                        *([("multihome, file state", file_cmd)] if args.file_state else []),
                    )
                }
                setups = {
                    "none": [],
                    "floor": webhooks("floor", ports["floor"], "/floor", "/floor", ca),
                    **(
                        {
                            "floor, patching": webhooks(
                                "floor-patching", ports["floor"], "/floor-patch", "/floor", ca
                            )
                        }
                        if args.patching_floor
                        else {}
                    ),
                    **{
                        name: webhooks(
                            name.replace(", ", "-").replace(" ", "-"),
                            port,
                            "/mutate/pods",
                            "/validate/pods",
                            ca,
                        )
                        for name, port in ports.items()
                        if name != "floor"
                    },
                }
                api = HttpKubeApi(Endpoint.load(plane.kubeconfig))
                results: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
                for number in range(args.rounds):
                    for name, configurations in setups.items():
                        use(plane, configurations)
                        injects = name.startswith("multihome") or name == "floor, patching"
                        tag = name.replace(", ", "-").replace(" ", "-")
                        round_latencies(api, 20, f"warm-{tag}-{number}", injects)
                        latencies = round_latencies(api, args.pods, f"{tag}-{number}", injects)
                        results[name].append((percentile(latencies, 0.5), percentile(latencies, 0.99)))
                        print(
                            f"round {number + 1} {name}: p50 {results[name][-1][0] * 1e3:.2f} ms, p99 {results[name][-1][1] * 1e3:.2f} ms",
                            flush=True,
                        )
    report(results, args.pods, args.rounds)


def report(results: dict[str, list[tuple[float, float]]], pods: int, rounds: int) -> None:
    p50 = {name: statistics.median(r[0] for r in rows) * 1e3 for name, rows in results.items()}
    p99 = {name: statistics.median(r[1] for r in rows) * 1e3 for name, rows in results.items()}
    print(f"\nPod CREATE through kube-apiserver, {pods} Pods x {rounds} rounds per set-up, median of rounds")
    print("| set-up | p50 ms | p99 ms | added p50 ms | added p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in results:
        print(
            f"| {name} | {p50[name]:.2f} | {p99[name]:.2f} | {p50[name] - p50['none']:.2f} | {p99[name] - p99['none']:.2f} |"
        )
    print()
    for name in results:
        if name in ("none", "floor"):
            continue
        ratios = []
        for quantile, d in (("p50", p50), ("p99", p99)):
            floor_adds = d["floor"] - d["none"]
            if floor_adds <= 0:
                # The floor's webhooks added nothing measurable: the rounds' noise is larger.
                ratios.append(f"no ratio ({quantile}: the floor adds {floor_adds:.2f} ms, within the noise)")
            else:
                ratios.append(f"{(d[name] - d['none']) / floor_adds:.2f}x ({quantile})")
        print(f"{name} adds {' and '.join(ratios)} what the floor adds")


if __name__ == "__main__":
    main()
