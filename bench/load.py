"""End-to-end load over TLS with keep-alive: `python -m bench.load` (needs Debian's hey and wrk).

Starts `python -m webhook serve` on a generated state at the scale of the decision
benchmarks (10,000 namespaces, 5,000 NADs, 1,000 rules, 5,000 Pods, 2,000 policies),
and, in the same run, the floor: the same server stack (gunicorn, TLS, the Flask
app, review decoding and encoding) with one route that always allows. Both run
with `serve`'s workers and threads (1 x 4, as the chart runs them) unless
`--workers` and `--threads` say otherwise. Then:

- fixed rates (hey, one process per endpoint of the mix, rate-limited workers):
  p50 / p99 / max latency and errors at each rate;
- saturation (wrk with a Lua script rotating the mix): throughput of multihome and
  of the floor, and their ratio;
- RSS of each gunicorn worker after the runs.

The mix: 40% Pod create with injection, 30% Pod validation, 15% NAD validation,
15% NetworkPolicy enrichment. `--soak SECONDS` runs one long fixed-rate phase and
reports RSS growth across it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import yaml

from bench.enrichment import documents as enrichment_documents
from bench.scale import cluster_documents, pod_for
from tests.server import free_port, issue_certificates

ROOT = Path(__file__).resolve().parent.parent
MIX = {
    "/mutate/pods": 0.40,
    "/validate/pods": 0.30,
    "/validate/networkattachmentdefinitions": 0.15,
    "/mutate/networkpolicies": 0.15,
}


# A policy whose peers select many multi-homed Pods: enriched with a few hundred CIDRs.
POLICY: Final = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "load", "namespace": "ns-7"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "app3"}},
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchLabels": {"app": "app4"}}},
                    {"namespaceSelector": {"matchLabels": {"team": "t7"}}},
                ]
            }
        ],
    },
}


def write_state(directory: Path) -> None:
    """The decision benchmarks' cluster, plus Pods and policies, as YAML files."""
    docs = [doc for _, doc in cluster_documents(10_000, 5_000, 1_000)]
    extra = [
        doc
        for _, doc in enrichment_documents(2_000, 5_000, 2_000, 200)
        if doc.get("kind") in ("Pod", "NetworkPolicy")
    ]
    for index, chunk in enumerate(range(0, len(docs) + len(extra), 2_000)):
        batch = (docs + extra)[chunk : chunk + 2_000]
        (directory / f"state-{index:02d}.yaml").write_text(yaml.safe_dump_all(batch, sort_keys=False))


def review(
    kind: str, group: str, version: str, obj: dict[str, Any], namespace: str, operation: str = "CREATE"
) -> bytes:
    request = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "operation": operation,
        "namespace": namespace,
        "object": obj,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
    }
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


def bodies(directory: Path) -> dict[str, Path]:
    """One realistic review per endpoint, written to files for hey and wrk."""
    rng = random.Random(5)
    pod = pod_for(rng, 10_000, 5_000)
    pod["metadata"]["labels"] = {"app": "app1", "pod-template-hash": "7d9c8b6f5"}
    pod["metadata"]["namespace"] = "ns-1"
    config = '{"cniVersion":"0.4.0","name":"dp","plugins":[{"type":"ipvlan","master":"eth1","ipam":{"type":"whereabouts","range":"10.20.0.0/24","exclude":["10.20.0.0/28"]}},{"type":"tuning","mtu":9001}]}'
    nad = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {
            "name": "dp-new",
            "namespace": "ns-1",
            "annotations": {"multihome.io/ports": "UDP/2152"},
        },
        "spec": {"config": config},
    }
    contents = {
        "/mutate/pods": review("Pod", "", "v1", pod, "ns-1"),
        "/validate/pods": review("Pod", "", "v1", pod, "ns-1"),
        "/validate/networkattachmentdefinitions": review(
            "NetworkAttachmentDefinition", "k8s.cni.cncf.io", "v1", nad, "ns-1"
        ),
        "/mutate/networkpolicies": review("NetworkPolicy", "networking.k8s.io", "v1", POLICY, "ns-7"),
        "/floor": review("Pod", "", "v1", pod, "ns-1"),
    }
    files = {}
    for path, content in contents.items():
        file = directory / (path.strip("/").replace("/", "-") + ".json")
        file.write_bytes(content)
        files[path] = file
    return files


@contextmanager
def server(
    module: list[str], certs: Path, workers: int, log: Path, log_level: str = "warning", threads: int = 8
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        *module,
        "--bind",
        f"127.0.0.1:{port}",
        "--tls-cert",
        str(certs / "tls.crt"),
        "--tls-key",
        str(certs / "tls.key"),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--log-level",
        log_level,
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(args, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"https://127.0.0.1:{port}/readyz"],
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.stdout == "200":
                break
            if process.poll() is not None:
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.5)
        yield port, process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def worker_rss_mib(master: int) -> list[float]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    result = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                result.append(int(line.split()[1]) / 1024)
    return result


def fixed_rate(port: int, files: dict[str, Path], rate: int, seconds: int) -> dict[str, Any]:
    """The mix at `rate` reviews/s for `seconds`: hey per endpoint, workers at <= 20 rps each."""
    processes = []
    for path, share in MIX.items():
        endpoint_rate = rate * share
        workers = max(2, round(endpoint_rate / 20))
        args = [
            "hey",
            "-z",
            f"{seconds}s",
            "-c",
            str(workers),
            "-q",
            f"{endpoint_rate / workers:.3f}",
            "-m",
            "POST",
            "-T",
            "application/json",
            "-D",
            str(files[path]),
            "-o",
            "csv",
            f"https://127.0.0.1:{port}{path}",
        ]
        processes.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    latencies, errors, total = [], 0, 0
    for process in processes:
        out, _ = process.communicate(timeout=seconds + 120)
        for row in csv.DictReader(io.StringIO(out)):
            total += 1
            if row["status-code"] != "200":
                errors += 1
            latencies.append(float(row["response-time"]) * 1000)
    latencies.sort()
    return {
        "rate": rate,
        "sent": total,
        "achieved": total / seconds,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan"),
        "max": latencies[-1] if latencies else float("nan"),
        "errors": errors,
    }


WRK_SCRIPT = """
local paths, bodies = {}, {}
local weights = {WEIGHTS}
for path, file in pairs({FILES}) do
  local f = io.open(file, "rb"); local body = f:read("*a"); f:close()
  for _ = 1, weights[path] do paths[#paths + 1] = path; bodies[#bodies + 1] = body end
end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("POST", paths[i], {["Content-Type"] = "application/json"}, bodies[i])
end
"""


def saturation(
    port: int, files: dict[str, Path], paths: dict[str, int], seconds: int, workdir: Path
) -> dict[str, float]:
    """Closed-loop maximum throughput of a mix (weights in twentieths) with wrk."""
    lua = WRK_SCRIPT.replace("{WEIGHTS}", "{" + ", ".join(f'["{p}"] = {w}' for p, w in paths.items()) + "}")
    lua = lua.replace("{FILES}", "{" + ", ".join(f'["{p}"] = "{files[p]}"' for p in paths) + "}")
    script = workdir / f"mix-{len(paths)}.lua"
    script.write_text(lua)
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(script), f"https://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec:")))
    non_2xx = sum(int(line.split()[-1]) for line in out.splitlines() if line.strip().startswith("Non-2xx"))
    p99 = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("99%"))
    return {"rps": rps, "non_2xx": non_2xx, "p99": _ms(p99)}


def _ms(text: str) -> float:
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    for unit in ("us", "ms", "s"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def soak(port: int, master: int, files: dict[str, Path], seconds: int) -> None:
    """A long run at 500/s after a warm-up (caches filled), with worker RSS sampled every minute."""
    fixed_rate(port, files, 500, 30)
    samples = [worker_rss_mib(master)]
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(fixed_rate(port, files, 500, seconds)))
    runner.start()
    while runner.is_alive():
        runner.join(timeout=60)
        samples.append(worker_rss_mib(master))
    first, last = samples[0], samples[-1]
    growth = max((b - a) / a for a, b in zip(first, last, strict=False))
    print(
        f"soak {seconds} s at 500/s after a 30 s warm-up: {outcome['sent']:,} reviews, {outcome['errors']} errors, "
        f"p50 {outcome['p50']:.1f} ms, p99 {outcome['p99']:.1f} ms, max {outcome['max']:.0f} ms"
    )
    print(
        "worker RSS, MiB, every minute: "
        + " | ".join(", ".join(f"{m:.0f}" for m in sample) for sample in samples)
    )
    print(f"largest RSS growth over the soak: {growth:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15, help="length of each fixed-rate run")
    parser.add_argument("--rates", default="100,500,1000")
    parser.add_argument("--soak", type=int, default=0, help="seconds of one long run at 500 reviews/s")
    parser.add_argument(
        "--rounds", type=int, default=3, help="saturation rounds, floor and multihome alternating"
    )
    parser.add_argument("--workers", type=int, default=None, help="both servers' workers (serve's default)")
    parser.add_argument("--threads", type=int, default=None, help="both servers' threads (serve's default)")
    args = parser.parse_args()
    from webhook.server.settings import ServeSettings  # noqa: PLC0415

    workers = args.workers or ServeSettings().workers
    threads = args.threads or ServeSettings().threads
    for tool in ("hey", "wrk", "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: apt-get install hey wrk curl")
    with tempfile.TemporaryDirectory(prefix="multihome-load-") as directory:
        work = Path(directory)
        (work / "state").mkdir()
        write_state(work / "state")
        issue_certificates(work / "certs")
        files = bodies(work)
        env_note = f"{os.cpu_count()} cores"
        with (
            server(
                ["webhook", "serve", "--state", str(work / "state")],
                work / "certs",
                workers,
                work / "multihome.log",
                threads=threads,
            ) as (port, process),
            server(["bench.floor"], work / "certs", workers, work / "floor.log", threads=threads) as (
                floor_port,
                _,
            ),
        ):
            if args.soak:
                soak(port, process.pid, files, args.soak)
                return
            print(
                f"fixed rates ({env_note}, {workers} worker(s) x {threads} threads; "
                "the mix: 40% inject, 30% Pod validation, 15% NAD validation, 15% enrichment)"
            )
            print("| rate/s | achieved/s | p50 ms | p99 ms | max ms | errors |")
            print("| ---: | ---: | ---: | ---: | ---: | ---: |")
            for rate in (int(r) for r in args.rates.split(",")):
                fixed_rate(port, files, rate, 3)  # warm-up: connections, caches; not recorded
                r = fixed_rate(port, files, rate, args.seconds)
                print(
                    f"| {rate:,} | {r['achieved']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['errors']} |"
                )
            mix = {p: round(w * 20) for p, w in MIX.items()}
            # Alternate the two, several rounds, and compare medians: one run of each is noise here.
            rounds = [
                (
                    saturation(floor_port, files, {"/floor": 1}, args.seconds, work),
                    saturation(port, files, mix, args.seconds, work),
                )
                for _ in range(args.rounds)
            ]
            floor = min(
                rounds, key=lambda r: abs(r[0]["rps"] - statistics.median(x[0]["rps"] for x in rounds))
            )[0]
            ours = min(
                rounds, key=lambda r: abs(r[1]["rps"] - statistics.median(x[1]["rps"] for x in rounds))
            )[1]
            ratios = sorted(o["rps"] / f["rps"] for f, o in rounds)
            print()
            print(
                "| saturation (wrk, 2 threads, 32 connections; median round) | reviews/s | p99 ms | non-2xx |"
            )
            print("| --- | ---: | ---: | ---: |")
            print(
                f"| floor: constant allowed review, same stack | {floor['rps']:,.0f} | {floor['p99']:.1f} | {floor['non_2xx']:.0f} |"
            )
            print(f"| multihome, the mix | {ours['rps']:,.0f} | {ours['p99']:.1f} | {ours['non_2xx']:.0f} |")
            print(
                f"\nthroughput ratio to the floor, per round: {', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}"
            )
            print(
                f"worker RSS after the runs: {', '.join(f'{m:.0f}' for m in worker_rss_mib(process.pid))} MiB"
            )


if __name__ == "__main__":
    main()
