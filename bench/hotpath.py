"""The hot path against the bare floor: `python -m bench.hotpath` (needs Debian's wrk).

Five servers in one run (six for one endpoint), all with the same TLS certificate on loopback:

- the bare floor, stock (`bench/bare_floor.py`): a Flask app answering a constant
  allow under stock gunicorn gthread, 2 workers x 8 threads (the issue's floor);
- the same, with multihome's workers and threads (1 x 4 by default): what stock
  gthread makes of multihome's process model;
- the bare floor on multihome's server stack: the same app under `WebhookWorker`,
  with the workers and threads multihome runs with, so the only difference left
  from multihome is the per-review work;
- for `/mutate/networkpolicies` only, the bare floor on multihome's worker answering
  with multihome's own answer (its patch of 200 `ipBlock`s, encoded once, the uid
  put in): what the size of the answer costs, apart from the work of making it;
- multihome with each endpoint's decision made once (`bench/decided_once.py`):
  `serve` answering every review with the decision it made for the first, so the
  stack around the decisions (decoding, checks, response, review line, metrics) is
  all that is left;
- multihome: `python -m webhook serve` on the decision benchmarks' state
  (10,000 namespaces, 5,000 NADs, 1,000 rules, 2,000 policies), with its defaults.

For each endpoint (`/mutate/pods` with an injection, `/validate/pods`,
`/mutate/networkpolicies` with an enrichment), rounds alternate between the
servers:

- saturation: wrk, 1 thread, 8 keep-alive connections, `--seconds` per round;
  reviews/s (median over rounds and the spread (max - min) / median), and the
  server's CPU time per review read from /proc (user + system, every process);
- sequential: wrk, 1 connection, p50 latency.

Then, in process, what each part of a review costs on its own (decoding, the
decision, the response, the log line, the metrics), in microseconds. For
`/mutate/pods` the decision is timed twice: remembered (the same Pod again, as a
ReplicaSet's replicas arrive) and made afresh.
"""

from __future__ import annotations

import os
import tempfile

# Metrics as `serve` keeps them, in files shared by workers: prometheus_client picks its
# value class when first imported, so this comes before anything that imports it.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="multihome-hotpath-metrics-"))

import argparse
import itertools
import logging.config
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from bench.load import POLICY, review, server, write_state
from tests.server import issue_certificates

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_POD = ROOT / "tests" / "fixtures" / "reviews" / "replicaset-pod.yaml"
ENDPOINTS = ("/mutate/pods", "/validate/pods", "/mutate/networkpolicies")
LUA = """
local f = io.open("{BODY}", "rb"); local body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.body = body; wrk.headers["Content-Type"] = "application/json"
"""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def review_bodies() -> dict[str, bytes]:
    """One review per endpoint: the fixture Pod (which its rules inject into) and a policy to enrich."""
    pod = yaml.safe_load(FIXTURE_POD.read_text())
    return {
        "/mutate/pods": review("Pod", "", "v1", pod, "ns-1"),
        "/validate/pods": review("Pod", "", "v1", pod, "ns-1"),
        "/mutate/networkpolicies": review("NetworkPolicy", "networking.k8s.io", "v1", POLICY, "ns-7"),
    }


def cpu_seconds(master: int) -> float:
    """User + system CPU of a gunicorn master and its live workers."""
    pids = [master, *map(int, Path(f"/proc/{master}/task/{master}/children").read_text().split())]
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def wrk(port: int, path: str, script: Path, connections: int, seconds: float) -> str:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    return subprocess.run(
        [*args, f"https://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True
    ).stdout


def _field(out: str, prefix: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.strip().startswith(prefix))


def _ms(text: str) -> float:
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


@dataclass
class Runs:
    """One server's rounds on one endpoint."""

    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)

    @property
    def spread(self) -> float:
        return (max(self.rps) - min(self.rps)) / statistics.median(self.rps)


def saturate(port: int, master: int, path: str, script: Path, seconds: float, runs: Runs) -> None:
    before = cpu_seconds(master)
    out = wrk(port, path, script, 8, seconds)
    spent = cpu_seconds(master) - before
    requests = int(next(line.split()[0] for line in out.splitlines() if "requests in" in line))
    errors = [line for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line]
    if errors:
        raise RuntimeError(f"{path} on port {port}: {errors}")
    runs.rps.append(float(_field(out, "Requests/sec:")))
    runs.cpu_us.append(spent / requests * 1e6)


def sequential(port: int, path: str, script: Path, seconds: float, runs: Runs) -> None:
    runs.p50_ms.append(_ms(_field(wrk(port, path, script, 1, seconds), "50%")))


BATCH = 100  # log lines and metric samples are timed by the batch, with the flush that writes them


def _parts(
    path: str, body: bytes, state: Any, handler: Any, metrics: Any, log: Any
) -> dict[str, Callable[[], object]]:
    """Each part of a review as a call; the batched parts do BATCH reviews' worth and their flush."""
    from webhook.admission.review import decode_review, review_response  # noqa: PLC0415
    from webhook.decisions.inject import inject_pod  # noqa: PLC0415
    from webhook.decisions.policy import AdmissionPolicy  # noqa: PLC0415
    from webhook.server.app import _log_review  # noqa: PLC0415
    from webhook.telemetry.logs import RepeatSampler  # noqa: PLC0415

    settings = AdmissionPolicy()
    every_line = RepeatSampler(window=0)  # the line as written, when it is
    request = decode_review(body)
    decision = handler(request, state, settings)

    def log_lines() -> None:
        for _ in range(BATCH):
            _log_review(path, request, decision, 0.0003, every_line)
        log.flush()

    repeats = RepeatSampler()
    _log_review(path, request, decision, 0.0003, repeats)  # the first of the run, written

    def repeated_lines() -> None:
        for _ in range(BATCH):
            _log_review(path, request, decision, 0.0003, repeats)
        log.flush()

    def samples() -> None:
        for _ in range(BATCH):
            metrics.review(path, "CREATE", decision.outcome, 0.0003)
        metrics.flush()

    parts: dict[str, Callable[[], object]] = {
        "decode": lambda: decode_review(body),
        "decision": lambda: handler(request, state, settings),
        # A decision's patch is encoded once; a fresh copy is encoded afresh, as each review's is.
        "response": lambda: review_response(uid=request["uid"], decision=replace(decision)),
    }
    if path == "/mutate/pods":
        parts["decision, made afresh"] = lambda: inject_pod(request, state, settings)
        parts["response, the remembered decision's"] = lambda: review_response(
            uid=request["uid"], decision=decision
        )
    parts[f"log line (per line, in batches of {BATCH})"] = log_lines
    if path == "/mutate/pods":
        parts[f"log line of a replica repeating the line before (in batches of {BATCH})"] = repeated_lines
    parts[f"metrics (per review, in batches of {BATCH})"] = samples
    return parts


def in_process(calls: int) -> list[tuple[str, str, float]]:
    """Microseconds per part of a review, each part timed alone on the same decoded review."""
    from bench.enrichment import documents as enrichment_documents  # noqa: PLC0415
    from bench.scale import cluster_documents  # noqa: PLC0415
    from webhook.cluster.files import FileState  # noqa: PLC0415
    from webhook.server.app import default_routes  # noqa: PLC0415
    from webhook.telemetry.logs import lean_records, logging_config  # noqa: PLC0415
    from webhook.telemetry.metrics import Metrics  # noqa: PLC0415

    # The log line as `serve` writes it, at info, to a stream that costs nothing to write to.
    logging.config.dictConfig(logging_config("info"))
    lean_records()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115
    docs = [doc for _, doc in cluster_documents(10_000, 5_000, 1_000)]
    docs += [d for _, d in enrichment_documents(2_000, 5_000, 2_000, 200) if d.get("kind") == "Pod"]
    state, routes, metrics = (
        FileState([(f"doc-{i}", d) for i, d in enumerate(docs)]),
        default_routes(),
        Metrics(),
    )
    rows = []
    for path, body in review_bodies().items():
        for name, work in _parts(path, body, state, routes[path], metrics, handler).items():
            per = BATCH if "batches" in name else 1
            for _ in range(200 // per):
                work()
            samples = []
            for _ in range(max(calls // per, 50)):
                start = time.perf_counter_ns()
                work()
                samples.append(time.perf_counter_ns() - start)
            rows.append((path, name, statistics.median(samples) / 1000 / per))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4, help="length of each saturation round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5_000, help="in-process calls per part")
    parser.add_argument("--workers", type=int, default=None, help="multihome's workers (its default)")
    parser.add_argument("--threads", type=int, default=None, help="multihome's threads (its default)")
    parser.add_argument(
        "--log-level", default="info", help="multihome's log level (warning drops the review lines)"
    )
    parser.add_argument("--in-process-only", action="store_true", help="only the parts, in process")
    args = parser.parse_args()
    if args.in_process_only:
        print_in_process(args.calls)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    from webhook.server.settings import ServeSettings  # noqa: PLC0415

    workers = args.workers or ServeSettings().workers
    threads = args.threads or ServeSettings().threads
    with tempfile.TemporaryDirectory(prefix="multihome-hotpath-") as directory, ExitStack() as stack:
        work = Path(directory)
        (work / "state").mkdir()
        write_state(work / "state")
        issue_certificates(work / "certs")
        scripts = {}
        for path, body in review_bodies().items():
            stem = path.strip("/").replace("/", "-")
            (work / f"{stem}.json").write_bytes(body)
            script = work / f"{stem}.lua"
            script.write_text(LUA.replace("{BODY}", str(work / f"{stem}.json")))
            scripts[path] = script
        once, ours = (
            f"multihome {workers}x{threads}, each decision made once",
            f"multihome {workers}x{threads}",
        )
        servers: dict[str, tuple[int, int]] = {}
        for name, module, n_workers, n_threads, level in (
            ("bare floor, stock gunicorn 2x8", ["bench.bare_floor"], 2, 8, "warning"),
            (
                f"bare floor, stock gunicorn {workers}x{threads}",
                ["bench.bare_floor"],
                workers,
                threads,
                "warning",
            ),
            (
                f"bare floor, multihome's worker {workers}x{threads}",
                ["bench.bare_floor", "--worker-class", "webhook.server.gunicorn.WebhookWorker"],
                workers,
                threads,
                "warning",
            ),
            (
                once,
                ["bench.decided_once", "--state", str(work / "state")],
                workers,
                threads,
                args.log_level,
            ),
            (
                ours,
                ["webhook", "serve", "--state", str(work / "state")],
                workers,
                threads,
                args.log_level,
            ),
        ):
            log = work / f"{len(servers)}.log"
            port, process = stack.enter_context(
                server(module, work / "certs", n_workers, log, level, threads=n_threads)
            )
            servers[name] = (port, process.pid)
        # The floor again, answering the enrichment multihome answers: what an answer that size costs.
        path = "/mutate/networkpolicies"
        answer = work / "answer.json"
        answer.write_bytes(post(servers[ours][0], path, work / "mutate-networkpolicies.json"))
        sized = f"bare floor answering multihome's {len(answer.read_bytes()):,} bytes, multihome's worker"
        port, process = stack.enter_context(
            server(
                [
                    "bench.bare_floor",
                    "--worker-class",
                    "webhook.server.gunicorn.WebhookWorker",
                    "--answer",
                    str(answer),
                ],
                work / "certs",
                workers,
                work / "sized.log",
                "warning",
                threads=threads,
            )
        )
        on = {p: list(servers) for p in ENDPOINTS}
        on[path].insert(on[path].index(once), sized)
        servers[sized] = (port, process.pid)
        results: dict[tuple[str, str], Runs] = {(n, p): Runs() for p in ENDPOINTS for n in on[p]}
        for path in ENDPOINTS:
            for name in on[path]:
                wrk(servers[name][0], path, scripts[path], 8, 1)  # warm-up: connections, caches
            for _ in range(args.rounds):
                for name in on[path]:
                    port, master = servers[name]
                    saturate(port, master, path, scripts[path], args.seconds, results[name, path])
                    sequential(port, path, scripts[path], 2, results[name, path])
        report(results, on, args)
    print()
    print_in_process(args.calls)


def print_in_process(calls: int) -> None:
    print(f"In process, one core, median of {calls:,} calls per part (microseconds):")
    print("| endpoint | part | us |")
    print("| --- | --- | ---: |")
    for path, part, micros in in_process(calls):
        print(f"| `{path}` | {part} | {micros:.1f} |")


def post(port: int, path: str, body: Path) -> bytes:
    """One review's answer, as a client reads it."""
    args = ["curl", "-sk", "-H", "Content-Type: application/json", "--data-binary", f"@{body}"]
    return subprocess.run(
        [*args, f"https://127.0.0.1:{port}{path}"],
        capture_output=True,
        check=True,
    ).stdout


def report(results: dict[tuple[str, str], Runs], on: dict[str, list[str]], args: Any) -> None:
    names = on[ENDPOINTS[0]]
    stock, stock_ours, floor, _, ours = names
    print(
        f"Saturation: wrk, 1 thread, 8 connections, {args.seconds:g} s rounds, {args.rounds} rounds "
        f"alternating; sequential: 1 connection, 2 s. {os.cpu_count()} cores. "
        f"multihome's log level: {args.log_level}."
    )
    print()
    print("| endpoint | server | reviews/s (median) | spread | CPU us/review | sequential p50 ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for path in ENDPOINTS:
        for name in on[path]:
            r = results[name, path]
            print(
                f"| `{path}` | {name} | {statistics.median(r.rps):,.0f} | {r.spread:.0%} | "
                f"{statistics.median(r.cpu_us):,.0f} | {statistics.median(r.p50_ms):.2f} |"
            )
    print()
    print(
        "| endpoint | throughput / bare floor, same stack | / bare floor, stock 2x8 | "
        "CPU per review / same stack | / stock 2x8 | p50 / same stack | / stock 2x8 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in ENDPOINTS:
        mine = results[ours, path]
        print(
            f"| `{path}` | {_ratio(mine, results[floor, path], 'rps'):.2f} | "
            f"{_ratio(mine, results[stock, path], 'rps'):.2f} | "
            f"{_ratio(mine, results[floor, path], 'cpu_us'):.2f}x | "
            f"{_ratio(mine, results[stock, path], 'cpu_us'):.2f}x | "
            f"{_ratio(mine, results[floor, path], 'p50_ms'):.2f}x | "
            f"{_ratio(mine, results[stock, path], 'p50_ms'):.2f}x |"
        )
    print()
    print("Step by step on multihome's worker, each server against the one before it:")
    print("| endpoint | from | to | throughput | CPU per review | p50 |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for path in ENDPOINTS:
        steps = [n for n in on[path] if n not in (stock, stock_ours)]
        for low, high in itertools.pairwise(steps):
            a, b = results[low, path], results[high, path]
            print(
                f"| `{path}` | {low} | {high} | {_ratio(b, a, 'rps'):.2f} | "
                f"{_ratio(b, a, 'cpu_us'):.2f}x | {_ratio(b, a, 'p50_ms'):.2f}x |"
            )


def _ratio(mine: Runs, of: Runs, attribute: str) -> float:
    """The median of `attribute` over `mine`'s rounds, to that over `of`'s."""
    return float(statistics.median(getattr(mine, attribute)) / statistics.median(getattr(of, attribute)))


if __name__ == "__main__":
    main()
