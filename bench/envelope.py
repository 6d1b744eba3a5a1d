"""One replica at Kubernetes' scalability envelope: `python -m bench.envelope`.

A test API server on loopback (tests/fake_apiserver.py: real HTTP, lists in pages
with `limit`/`continue`, chunked watches with bookmarks) holds:

- 150,000 Pods in 10,000 namespaces, 30,000 of them multi-homed (a networks
  annotation naming two NADs, and Multus' network-status), the rest with none;
- 5,000 NADs, 1,000 AttachmentRules (bench/scale.py) and 10,000 NetworkPolicies.

Then, in order:

1. **One replica as the chart runs it**: `python -m webhook serve --kubeconfig ...`
   with its defaults (the reconciler on, so the leader's reconcile passes and
   minute audits run too). Time from start to `/readyz` 200; the total RSS of every
   process of the replica once ready and at the end, and the sum of their peaks
   (VmHWM); the watches the replica opened per resource; the pages the lists took.
2. **Events while admissions are served**: `--rate` Pod changes per second for
   `--events` seconds on the API server while one client sends reviews over TLS
   (the fixture Pod to `/mutate/pods` and `/validate/pods`, a policy to
   `/mutate/networkpolicies`); the largest `multihome_state_last_event_age_seconds`
   for Pods seen on `/metrics` (sampled every second), and the review latencies.
3. **Churn**: Pods created and deleted at `--churn-rate` per second for `--churn`
   seconds (600 in the issue's run); the replica's total RSS every 30 s.
4. **In process, the same state** (a LiveState on the same API server, no HTTP in
   the way): p50/p99 of the `/mutate/pods` and `/validate/pods` decisions over
   10,000 Pods drawn at random, of enrichment over the 10,000 policies, and one
   reconcile pass over all of them in dry run (the writes are throttled apart).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.scale import cluster_documents
from tests.fake_apiserver import FakeApiServer
from tests.server import Server, free_port, issue_certificates
from webhook.cluster.live import NADS_PATH, NAMESPACES_PATH, PODS_PATH, POLICIES_PATH, RULES_PATH

ROOT = Path(__file__).resolve().parent.parent
PATHS = {"Namespace": NAMESPACES_PATH, "NetworkAttachmentDefinition": NADS_PATH, "AttachmentRule": RULES_PATH}
NETWORKS = "k8s.v1.cni.cncf.io/networks"


def pod(index: int, namespaces: int, nads: int, multihomed: bool, generation: int = 0) -> dict[str, Any]:
    """A Pod as a metadata-only list or watch returns it."""
    namespace = index % namespaces
    app = index % 20
    # The multi-homed run the apps the rules select; the others are workloads no rule selects
    # (a Pod a rule selects was given its networks at admission).
    name = f"app{app}" if multihomed else f"web{app}"
    metadata: dict[str, Any] = {
        "namespace": f"ns-{namespace}",
        "name": f"{name}-7d9c8b6f5-{index:06d}",
        "uid": f"00000000-0000-0000-0000-{index:012d}",
        "labels": {"app": name, "pod-template-hash": "7d9c8b6f5"},
        "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-7d9c8b6f5", "controller": True}
        ],
        "annotations": {"kubectl.kubernetes.io/restartedAt": f"2026-11-{1 + generation % 28:02d}T08:00:00Z"},
    }
    if multihomed:
        first, second = _shared_nad(namespace * 7 + app, nads), _shared_nad(namespace * 3 + app, nads)
        metadata["annotations"][NETWORKS] = f"kube-system/net-{first}@net1,kube-system/net-{second}@net2"
        metadata["annotations"]["k8s.v1.cni.cncf.io/network-status"] = json.dumps(
            [
                {"name": "aws-cni", "interface": "eth0", "ips": [f"192.168.{index % 250}.{index % 200 + 2}"]},
                {"name": f"kube-system/net-{first}", "interface": "net1", "ips": [f"10.0.{index % 250}.9"]},
            ]
        )
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}


def _shared_nad(index: int, nads: int) -> int:
    """A NAD of kube-system: bench/scale.py puts every fifth one in a team namespace."""
    index %= nads
    return (index + 1) % nads if index % 5 == 0 else index


def policy(index: int, namespaces: int) -> dict[str, Any]:
    peer: dict[str, Any] = {"podSelector": {"matchLabels": {"app": f"app{(index + 3) % 20}"}}}
    if index % 5 == 0:
        peer = {"namespaceSelector": {"matchLabels": {"multihome.io/profile": f"p{index % 200}"}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"allow-{index}",
            "namespace": f"ns-{index % namespaces}",
            "uid": f"uid-{index}",
        },
        "spec": {
            "podSelector": {"matchLabels": {"app": f"app{index % 20}"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [peer], "ports": [{"protocol": "TCP", "port": 8080}]}],
        },
    }


def add_state_arguments(parser: argparse.ArgumentParser) -> None:
    """The sizes of the state `populate` builds; Kubernetes' envelope by default."""
    parser.add_argument("--pods", type=int, default=150_000)
    parser.add_argument("--multihomed", type=int, default=30_000)
    parser.add_argument("--namespaces", type=int, default=10_000)
    parser.add_argument("--nads", type=int, default=5_000)
    parser.add_argument("--rules", type=int, default=1_000)
    parser.add_argument("--policies", type=int, default=10_000)


def populate(api: FakeApiServer, args: argparse.Namespace) -> None:
    for _, doc in cluster_documents(args.namespaces, args.nads, args.rules):
        api.put(PATHS[doc["kind"]], dict(doc))
    every = max(1, args.pods // args.multihomed) if args.multihomed else 0
    for index in range(args.pods):
        api.put(PODS_PATH, pod(index, args.namespaces, args.nads, bool(every) and index % every == 0))
    for index in range(args.policies):
        api.put(POLICIES_PATH, policy(index, args.namespaces))
    for store in api.collections.values():
        store.events.clear()  # nothing to replay: the lists are the state


def memory_mib(pids: list[int], field: str) -> float:
    """The sum of `field` (Pss from smaps_rollup, else from status) over `pids`, in MiB."""
    total = 0
    source = "smaps_rollup" if field == "Pss" else "status"
    for pid in pids:
        for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
    return total / 1024


class Replica:
    """`python -m webhook serve` as one replica runs it, and what /proc says about it."""

    def __init__(self, kubeconfig: Path, certs: Path, log: Path) -> None:
        self.port = free_port()
        self.certs = certs
        args = [sys.executable, "-m", "webhook", "serve", "--kubeconfig", str(kubeconfig)]
        args += ["--bind", f"127.0.0.1:{self.port}"]
        args += ["--tls-cert", str(certs / "tls.crt"), "--tls-key", str(certs / "tls.key")]
        self.started = time.monotonic()
        with log.open("wb") as sink:
            self.process = subprocess.Popen(args, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        self.server = Server(self.process, self.port, certs, log)

    def processes(self) -> list[int]:
        master = self.process.pid
        return [master, *map(int, Path(f"/proc/{master}/task/{master}/children").read_text().split())]

    def memory_mib(self, field: str) -> float:
        """The sum of `field` over every process of the replica.

        VmRSS and VmHWM (the peak) from /proc/PID/status count the pages a worker shares
        with the master it was forked from twice; Pss from smaps_rollup charges each
        shared page in part to each process, so its sum is the replica's real footprint.
        """
        return memory_mib(self.processes(), field)

    def get(self, path: str) -> tuple[int, bytes]:
        return self.server.get(path)

    def wait_ready(self, timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the replica exited")
            try:
                if self.get("/readyz")[0] == 200:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the replica did not become ready")

    def metric(self, name: str, labels: str) -> float:
        _, body = self.get("/metrics")
        match = re.search(rf"^{name}\{{[^}}]*{labels}[^}}]*\}} (\S+)$", body.decode(), re.MULTILINE)
        return float(match.group(1)) if match else float("nan")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def reviews() -> dict[str, bytes]:
    from bench.load import review  # noqa: PLC0415

    fixture = yaml.safe_load((ROOT / "tests" / "fixtures" / "reviews" / "replicaset-pod.yaml").read_text())
    fixture["metadata"]["labels"]["app"] = "app1"
    return {
        "/mutate/pods": review("Pod", "", "v1", fixture, "ns-1"),
        "/validate/pods": review("Pod", "", "v1", fixture, "ns-1"),
        "/mutate/networkpolicies": review(
            "NetworkPolicy",
            "networking.k8s.io",
            "v1",
            policy(7, 10_000) | {"metadata": {"name": "new", "namespace": "ns-7"}},
            "ns-7",
        ),
    }


def admissions(replica: Replica, stop: threading.Event, latencies: dict[str, list[float]]) -> None:
    """Reviews one after another on one keep-alive connection, as long as `stop` is not set."""
    bodies = reviews()
    conn = replica.server.connect()
    while not stop.is_set():
        for path, body in bodies.items():
            started = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: HTTP {response.status}")
            latencies.setdefault(path, []).append((time.perf_counter() - started) * 1000)
        time.sleep(0.01)
    conn.close()


def changes(api: FakeApiServer, args: argparse.Namespace, rate: float, seconds: float, churn: bool) -> int:
    """Pod events at `rate` per second: multi-homed Pods modified, or Pods created and deleted."""
    sent, started = 0, time.monotonic()
    every = max(1, args.pods // args.multihomed)
    created: list[tuple[str, str]] = []
    while (elapsed := time.monotonic() - started) < seconds:
        target = int(elapsed * rate)
        while sent < target:
            if churn:
                if len(created) >= 1000:
                    api.delete(PODS_PATH, *created.pop(0))
                else:
                    obj = pod(args.pods + sent, args.namespaces, args.nads, sent % 5 == 0)
                    api.put(PODS_PATH, obj)
                    created.append((obj["metadata"]["namespace"], obj["metadata"]["name"]))
            else:
                index = (sent * every) % args.pods
                api.put(PODS_PATH, pod(index, args.namespaces, args.nads, True, generation=sent))
            sent += 1
        time.sleep(0.002)
        if len(api.collections[PODS_PATH].events) > 50_000:
            with api.lock:
                del api.collections[PODS_PATH].events[:25_000]  # the watch has long read these
    return sent


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def in_process(api: FakeApiServer, port: int, workdir: Path, args: argparse.Namespace) -> list[str]:
    from policies.controllers.reconcile import Reconciler  # noqa: PLC0415
    from policies.enrich import NetworkPolicyEnricher  # noqa: PLC0415
    from webhook.admission.review import decode_review  # noqa: PLC0415
    from webhook.cluster.kube import Endpoint, HttpKubeApi  # noqa: PLC0415
    from webhook.cluster.live import LiveState  # noqa: PLC0415
    from webhook.decisions.inject import inject_pod  # noqa: PLC0415
    from webhook.decisions.policy import AdmissionPolicy  # noqa: PLC0415
    from webhook.decisions.validate import validate_pod  # noqa: PLC0415

    client = HttpKubeApi(Endpoint.load(api.kubeconfig(workdir, port)))
    # A NAD a rule names but the cache lacks is looked up once and the miss remembered: for
    # the whole run here, so the samples are the steady state a replica reaches.
    state = LiveState(client, watch_timeout=60, miss_ttl=3600).start()
    while not state.ready():
        time.sleep(0.05)
    policy, rng = AdmissionPolicy(), random.Random(4)
    requests = []
    for _ in range(10_000):
        index = rng.randrange(10_000_000)
        obj = pod(index, args.namespaces, args.nads, index % 5 == 0)
        obj["kind"], obj["apiVersion"] = "Pod", "v1"
        obj["spec"] = {"containers": [{"name": "app", "image": "app:1"}]}
        if index % 5:
            obj["metadata"]["annotations"] = {}
        request = {"uid": f"u{index}", "kind": {"group": "", "version": "v1", "kind": "Pod"}}
        request |= {"operation": "CREATE", "namespace": obj["metadata"]["namespace"], "object": obj}
        requests.append(
            decode_review(
                json.dumps(
                    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
                ).encode()
            )
        )
    enricher = NetworkPolicyEnricher()
    policies = [
        {
            "uid": f"p{i}",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
            "operation": "UPDATE",
            "namespace": p["metadata"]["namespace"],
            "object": dict(p),
        }
        for i, p in enumerate(state.network_policies())
    ]
    rows = []
    steps: list[tuple[str, Callable[[Any], object], list[Any]]] = [
        ("/mutate/pods decision", lambda r: inject_pod(r, state, policy), requests),
        ("/validate/pods decision", lambda r: validate_pod(r, state, policy), requests),
        ("/mutate/networkpolicies decision", lambda r: enricher(r, state, policy), policies),
    ]
    for name, work, items in steps:
        for item in items:  # warm-up: the misses above, the enricher's index
            work(item)
        samples = []
        for item in items:
            started = time.perf_counter()
            work(item)
            samples.append((time.perf_counter() - started) * 1e6)
        rows.append(
            f"| {name} | {len(samples):,} | {statistics.median(samples):,.0f} | {percentile(samples, 0.99):,.0f} |"
        )
    patched = sum(1 for r in requests if inject_pod(r, state, policy).patch)
    report = Reconciler(state, client, dry_run=True).reconcile_once()
    state.stop(timeout=0.5)
    return [
        f"{patched:,} of the {len(requests):,} Pods drawn get networks injected.",
        "",
        "| in process | calls | p50 us | p99 us |",
        "| --- | ---: | ---: | ---: |",
        *rows,
        "",
        f"One reconcile pass (dry run) over {report.policies:,} policies: {report.seconds:.2f} s "
        f"({report.patched:,} would be patched).",
    ]


def replica_steps(api: FakeApiServer, replica: Replica, args: argparse.Namespace) -> list[str]:
    """Steps 1 to 3 on the running replica."""
    out: list[str] = []
    ready = replica.wait_ready()
    time.sleep(10)  # the first reconcile pass and its index
    ready_rss, ready_peak = replica.memory_mib("VmRSS"), replica.memory_mib("VmHWM")
    ready_pss = replica.memory_mib("Pss")
    watches = Counter(r.split("?")[0].rsplit("/", 1)[1] for r in api.requests if "watch=true" in r)
    pod_pages = sum(1 for r in api.requests if r.startswith(PODS_PATH + "?") and "watch" not in r)
    out += [
        f"State: {args.pods:,} Pods ({args.multihomed:,} multi-homed), {args.namespaces:,} namespaces, "
        f"{args.nads:,} NADs, {args.rules:,} rules, {args.policies:,} NetworkPolicies.",
        "",
        f"Ready in {ready:.1f} s; {len(replica.processes())} processes; 10 s after ready, total RSS "
        f"{ready_rss:.0f} MiB (PSS {ready_pss:.0f} MiB); sum of peaks (VmHWM) {ready_peak:.0f} MiB.",
        "Watches opened per resource: "
        + ", ".join(f"{k} {v}" for k, v in sorted(watches.items()))
        + f". Pod list requests (pages, including the leader's audit): {pod_pages}.",
    ]
    stop, latencies = threading.Event(), dict[str, list[float]]()
    client = threading.Thread(target=admissions, args=(replica, stop, latencies))
    client.start()
    ages: list[float] = []
    sender = threading.Thread(
        target=lambda: ages.append(changes(api, args, args.rate, args.events, churn=False))
    )
    sender.start()
    event_ages = []
    while sender.is_alive():
        event_ages.append(replica.metric("multihome_state_last_event_age_seconds", 'resource="pods"'))
        time.sleep(1)
    stop.set()
    client.join()
    out += [
        "",
        f"{ages[0]:,} Pod changes in {args.events:.0f} s ({ages[0] / args.events:,.0f}/s) while "
        f"reviews were served: largest event age seen {max(event_ages):.2f} s "
        f"(sampled every second, {len(event_ages)} samples).",
        "",
        "| over TLS, during the events | reviews | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| `{path}` | {len(s):,} | {statistics.median(s):.2f} | {percentile(s, 0.99):.2f} |"
            for path, s in latencies.items()
        ),
    ]
    if args.warmup:
        # The leader's first passes (patches, companions, Events) grow memory once; this
        # churn is not sampled, so the figure below is the steady state's.
        changes(api, args, args.churn_rate, args.warmup, churn=True)
    before = replica.memory_mib("VmRSS")
    samples = [before]
    churner = threading.Thread(
        target=changes, args=(api, args, args.churn_rate, args.churn), kwargs={"churn": True}
    )
    churner.start()
    while churner.is_alive():
        churner.join(timeout=30)
        samples.append(replica.memory_mib("VmRSS"))
    out += [
        "",
        f"Churn, {args.churn_rate:.0f} Pods/s created and deleted for {args.churn:.0f} s "
        f"(after {args.warmup:.0f} s of it unsampled): total RSS "
        + " → ".join(f"{m:.0f}" for m in samples)
        + f" MiB; growth {(samples[-1] - before) / before:+.1%}; sum of peaks "
        f"{replica.memory_mib('VmHWM'):.0f} MiB; PSS at the end {replica.memory_mib('Pss'):.0f} MiB.",
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_state_arguments(parser)
    parser.add_argument("--rate", type=float, default=500, help="Pod changes per second in step 2")
    parser.add_argument("--events", type=float, default=60, help="seconds of step 2")
    parser.add_argument("--churn-rate", type=float, default=200)
    parser.add_argument("--churn", type=float, default=120, help="seconds of step 3 (the issue: 600)")
    parser.add_argument("--warmup", type=float, default=0, help="seconds of churn before step 3 samples")
    parser.add_argument(
        "--in-process-only",
        action="store_true",
        help="step 4 alone, on a fresh API server: no replica, no events before it",
    )
    args = parser.parse_args()

    api = FakeApiServer(bookmark_interval=5)
    populate(api, args)
    gc.freeze()  # the test API server's 150,000 objects: out of the collector's way in step 4
    port = api.serve()
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="multihome-envelope-") as directory:
        work = Path(directory)
        issue_certificates(work / "certs")
        if not args.in_process_only:
            replica = Replica(api.kubeconfig(work, port), work / "certs", work / "serve.log")
            try:
                out += replica_steps(api, replica, args)
            finally:
                replica.stop()
        out += ["", *in_process(api, port, work, args)]
    api.close()
    print("\n".join(out))


if __name__ == "__main__":
    main()
