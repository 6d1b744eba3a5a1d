"""`make chart-check`: helm lint, and helm template validated against the Kubernetes schemas.

Renders the chart with its default values and every override in chart/ci/, and validates
each rendered object with kubernetes-validate (strict: no unknown fields). cert-manager's
and Prometheus Operator kinds have no schema there and are checked for a spec only (the
real-control-plane tier applies them with their CRDs).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "chart"
KUBERNETES_VERSION = "1.30"


def render(helm: str, values: Path | None) -> list[dict[str, Any]]:
    args = [helm, "template", "multihome", str(CHART), "--namespace", "multihome", "--include-crds"]
    if values is not None:
        args += ["--values", str(values)]
    output = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def check(doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith(("cert-manager.io/", "monitoring.coreos.com/")):
        assert doc["spec"], f"{doc['kind']} {doc['metadata']['name']} has no spec"
        return
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def main() -> int:
    helm = shutil.which("helm")
    if helm is None:
        print("helm is not on PATH: .ci/run installs it (or see README, Helm chart)", file=sys.stderr)
        return 1
    subprocess.run([helm, "lint", str(CHART), "--strict"], check=True)
    for values in [None, *sorted((CHART / "ci").glob("*.yaml"))]:
        docs = render(helm, values)
        for doc in docs:
            check(doc)
        kinds = sorted({d["kind"] for d in docs})
        print(
            f"{values.name if values else 'default values'}: {len(docs)} objects valid ({', '.join(kinds)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
