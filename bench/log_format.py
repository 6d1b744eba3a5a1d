"""What a JSON log line costs to format: python-json-logger's formatter against the encoder alone.

    python -m bench.log_format [--lines 20000]

Both in this process, alternating, so the ratio holds on a noisy machine: the floor is
`wire.encode_loose` of the same fields, the least any JSON formatter can do.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from webhook.admission import wire
from webhook.telemetry.logs import FieldsRecord, JsonFormatter

FIELDS = {
    "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
    "path": "/mutate/pods",
    "kind": "Pod",
    "namespace": "team-a",
    "name": "web-7d4b9c8f6-x2x5k",
    "operation": "CREATE",
    "outcome": "patched",
    "duration_ms": 1.234,
    "rules": ["dataplane"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000)
    args = parser.parse_args()
    records = [
        FieldsRecord("multihome.admission", logging.INFO, "review", dict(FIELDS)) for _ in range(args.lines)
    ]
    formatter = JsonFormatter()

    def formatted() -> float:
        started = time.perf_counter()
        for record in records:
            formatter.format(record)
        return (time.perf_counter() - started) / len(records) * 1e6

    def floor() -> float:
        started = time.perf_counter()
        for record in records:
            wire.encode_loose(
                {"time": "", "level": "info", "logger": record.name, "message": record.msg, **FIELDS}
            )
        return (time.perf_counter() - started) / len(records) * 1e6

    lines, floors = [], []
    for _ in range(5):
        lines.append(formatted())
        floors.append(floor())
    line, least = statistics.median(lines), statistics.median(floors)
    print("| step | us per line |")
    print("| --- | ---: |")
    print(f"| JsonFormatter.format | {line:.2f} |")
    print(f"| encode the fields alone (floor) | {least:.2f} |")
    print(f"ratio to the floor: {line / least:.2f}")


if __name__ == "__main__":
    main()
