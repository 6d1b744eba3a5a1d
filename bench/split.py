"""Admission beside the controller, at Kubernetes' envelope: `python -m bench.split`.

The test API server of bench/envelope.py holds the same state (150,000 Pods in 10,000
namespaces, 30,000 multi-homed; 5,000 NADs, 1,000 rules, 10,000 NetworkPolicies). Two
processes run against it as the chart runs them: `serve` (one replica, its defaults) and
`controller` (the leader: reconciler on, audits every `--audit-interval` seconds).

In order, every figure from this one run:

1. serve: time from start to `/readyz` 200, its PSS then (the sum over its processes);
   the controller: PSS once its first reconcile pass and audit are done.
2. Quiet: one client sends the fixture Pod to `/mutate/pods` over TLS, one review after
   another on a keep-alive connection, for `--seconds`; nothing changes in the cluster.
3. Busy: the same client for the same time while `--rate` Pods change per second (the
   controller reconciles them) and the controller runs its audits.

The figure the issue asks for is the ratio of the busy p99 to the quiet p99 (at most 2);
the peaks (VmHWM) of both processes over the run give their memory envelopes.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.envelope import (
    ROOT,
    Replica,
    add_state_arguments,
    changes,
    memory_mib,
    percentile,
    populate,
    reviews,
)
from tests.fake_apiserver import FakeApiServer
from tests.server import free_port, issue_certificates
from webhook.cluster.live import POLICIES_PATH


class Controller:
    """`python -m webhook controller` with the chart's arguments, and what /proc says about it."""

    def __init__(self, kubeconfig: Path, log: Path, audit_interval: float) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "webhook", "controller", "--kubeconfig", str(kubeconfig)]
        args += ["--bind", f"127.0.0.1:{self.port}", "--audit-interval", str(audit_interval)]
        args += ["--lease-namespace", "default"]
        with log.open("wb") as sink:
            self.process = subprocess.Popen(args, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)

    def memory_mib(self, field: str) -> float:
        return memory_mib([self.process.pid], field)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def wait(self, name: str, at_least: float, timeout: float) -> float:
        """Seconds until the counter `name` reaches `at_least`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError("the controller exited")
            try:
                if self.metric(name) >= at_least:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{name} did not reach {at_least} within {timeout:.0f} s")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def mutate_latencies(replica: Replica, seconds: float, out: multiprocessing.SimpleQueue[list[float]]) -> None:
    """`/mutate/pods` reviews one after another on one keep-alive connection for `seconds`, in ms.

    Run in a process of its own: in this one the test API server's threads would hold the
    interpreter lock while it streams events, and their wait would count as serve's latency.
    """
    body, samples = reviews()["/mutate/pods"], []
    conn = replica.server.connect()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        conn.request("POST", "/mutate/pods", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"/mutate/pods: HTTP {response.status}")
        samples.append((time.perf_counter() - started) * 1000)
        time.sleep(0.005)
    conn.close()
    out.put(samples)


def measured(replica: Replica, seconds: float, background: threading.Thread | None) -> list[float]:
    context = multiprocessing.get_context("fork")
    out: multiprocessing.SimpleQueue[list[float]] = context.SimpleQueue()
    client = context.Process(target=mutate_latencies, args=(replica, seconds, out))
    client.start()
    if background is not None:
        background.start()
    samples = out.get()
    client.join()
    if background is not None:
        background.join()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_state_arguments(parser)
    parser.add_argument("--rate", type=float, default=100, help="Pod changes per second while busy")
    parser.add_argument("--seconds", type=float, default=60, help="of the quiet and of the busy phase")
    parser.add_argument("--audit-interval", type=float, default=20, help="the controller's, seconds")
    args = parser.parse_args()

    api = FakeApiServer(bookmark_interval=5)
    populate(api, args)
    gc.freeze()
    port = api.serve()
    with tempfile.TemporaryDirectory(prefix="multihome-split-") as directory:
        work = Path(directory)
        issue_certificates(work / "certs")
        kubeconfig = api.kubeconfig(work, port)
        controller = Controller(kubeconfig, work / "controller.log", args.audit_interval)
        replica = Replica(kubeconfig, work / "certs", work / "serve.log")
        try:
            ready = replica.wait_ready()
            ready_pss = replica.memory_mib("Pss")
            first = controller.wait("multihome_audit_runs_total", 1, 600)
            controller_pss = controller.memory_mib("Pss")
            quiet = measured(replica, args.seconds, None)
            audits_before = controller.metric("multihome_audit_runs_total")
            busy = measured(
                replica,
                args.seconds,
                threading.Thread(target=changes, args=(api, args, args.rate, args.seconds, False)),
            )
            audits = controller.metric("multihome_audit_runs_total") - audits_before
            serve_peak, controller_peak = replica.memory_mib("VmHWM"), controller.memory_mib("VmHWM")
            serve_pss, controller_end = replica.memory_mib("Pss"), controller.memory_mib("Pss")
        finally:
            replica.stop()
            controller.stop()
    api.close()
    patches = sum(1 for r in api.requests if r.startswith("PATCH " + POLICIES_PATH))
    q99, b99 = percentile(quiet, 0.99), percentile(busy, 0.99)
    print(
        "\n".join(
            [
                f"State: {args.pods:,} Pods ({args.multihomed:,} multi-homed), {args.namespaces:,} "
                f"namespaces, {args.nads:,} NADs, {args.rules:,} rules, {args.policies:,} NetworkPolicies.",
                "",
                f"serve: ready in {ready:.1f} s, PSS {ready_pss:.0f} MiB then, {serve_pss:.0f} MiB at the "
                f"end, peak RSS (VmHWM, all processes) {serve_peak:.0f} MiB.",
                f"controller: first audit done {first:.0f} s after serve was ready; PSS {controller_pss:.0f} "
                f"MiB then, {controller_end:.0f} MiB at the end, peak RSS (VmHWM) {controller_peak:.0f} MiB.",
                "",
                "| `/mutate/pods` on serve, over TLS | reviews | p50 ms | p99 ms |",
                "| --- | ---: | ---: | ---: |",
                f"| quiet, {args.seconds:.0f} s | {len(quiet):,} | {statistics.median(quiet):.2f} | {q99:.2f} |",
                f"| busy: {args.rate:.0f} Pod changes/s, {audits:.0f} audits, {patches:,} policy patches "
                f"in the run | {len(busy):,} | {statistics.median(busy):.2f} | {b99:.2f} |",
                "",
                f"busy p99 / quiet p99 = {b99 / q99:.2f} (target at most 2).",
            ]
        )
    )


if __name__ == "__main__":
    main()
