"""A long fuzzing run of every endpoint: `python -m bench.fuzz --cases 1000000`.

Hypothesis draws a pool of adversarial AdmissionReviews (tests/strategies.py, the
same strategies `make test` runs a few hundred of); each case is one of them,
mutated at random (values swapped for other values or types, keys dropped, lists
grown, strings cut), and sent through the whole HTTP layer in process. Every answer
must be a review with the request's uid and a decision (a handler exception shows as
a denial saying multihome could not decide), or a 400 for a body that is no longer a
review. One process per core, each with its own seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import random
import time
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings

from tests.strategies import reviews
from tests.support import CLUSTER
from webhook.cluster.files import FileState
from webhook.server.app import create_app
from webhook.server.settings import ServeSettings

REPLACEMENTS: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63,
    1.5,
    "",
    "x" * 300,
    "a/b/c@d@e",
    "[",
    "{}",
    [],
    {},
    [{}],
    {"name": "dp"},
    ["net1"],
    "kube-system/dp@net1",
]


def pool(size: int) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []

    @settings(
        max_examples=size,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(reviews())
    def collect(case: tuple[str, dict[str, Any]]) -> None:
        found.append(case)

    collect()
    return found


def mutate(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """The value with a few random changes somewhere inside it."""
    if isinstance(value, dict) and value and rng.random() < 0.8 and depth < 8:
        key = rng.choice(list(value))
        roll = rng.random()
        if roll < 0.15 and key not in ("request", "uid"):
            del value[key]
        elif roll < 0.35:
            value[key] = copy.deepcopy(rng.choice(REPLACEMENTS))
        else:
            value[key] = mutate(value[key], rng, depth + 1)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8 and depth < 8:
        index = rng.randrange(len(value))
        if rng.random() < 0.3:
            value.append(copy.deepcopy(value[index]))
        else:
            value[index] = mutate(value[index], rng, depth + 1)
        return value
    if isinstance(value, str) and value and rng.random() < 0.5:
        cut = rng.randrange(len(value))
        return value[:cut] + rng.choice([",", "@", "/", "[", '"', " ", "\u00e9", ""]) + value[cut + 1 :]
    return copy.deepcopy(rng.choice(REPLACEMENTS))


def run(worker: int, cases: int, pool_size: int) -> dict[str, int]:
    rng = random.Random(worker)
    base = pool(pool_size)
    client = create_app(ServeSettings(), FileState.from_directory(CLUSTER)).test_client()
    counts = {"cases": 0, "reviews": 0, "bad_requests": 0, "server_errors": 0, "undecided": 0, "wrong_uid": 0}
    for _ in range(cases):
        path, review = rng.choice(base)
        case = copy.deepcopy(review)
        roll = rng.random()
        # Mostly inside the object under review, where the decisions look; sometimes anywhere.
        if roll < 0.7 and isinstance(case["request"].get("object"), dict):
            case["request"]["object"] = mutate(case["request"]["object"], rng)
        elif roll < 0.9:
            case["request"] = mutate(case["request"], rng)
        elif roll < 0.95:
            case = mutate(case, rng)
        request = case.get("request") if isinstance(case, dict) else None
        uid = request.get("uid") if isinstance(request, dict) else None
        response = client.post(path, data=json.dumps(case), content_type="application/json")
        counts["cases"] += 1
        if response.status_code == 200:
            counts["reviews"] += 1
            answer = response.get_json()["response"]
            if answer.get("uid") != uid:
                counts["wrong_uid"] += 1
            message = answer.get("status", {}).get("message", "")
            if "could not decide" in message:
                counts["undecided"] += 1
                if counts["undecided"] <= 3:
                    print(f"undecided: {path}: {message}\n  {json.dumps(case)[:600]}", flush=True)
        elif response.status_code == 400:
            counts["bad_requests"] += 1
        else:
            counts["server_errors"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--pool", type=int, default=1_500, help="hypothesis-drawn reviews per process")
    parser.add_argument("--processes", type=int, default=multiprocessing.cpu_count())
    args = parser.parse_args()
    started = time.perf_counter()
    share = args.cases // args.processes
    with multiprocessing.Pool(args.processes) as processes:
        results = processes.starmap(run, [(worker, share, args.pool) for worker in range(args.processes)])
    total = {key: sum(r[key] for r in results) for key in results[0]}
    seconds = time.perf_counter() - started
    print("| cases | reviews | 400s | 500s | undecided (handler exceptions) | wrong uid | time |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {total['cases']:,} | {total['reviews']:,} | {total['bad_requests']:,} | {total['server_errors']} | {total['undecided']} | {total['wrong_uid']} | {seconds:.0f} s |"
    )
    if total["server_errors"] or total["undecided"] or total["wrong_uid"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
