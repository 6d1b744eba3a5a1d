"""The Helm chart as `helm template` renders it, and its objects pointed at a local server."""

from __future__ import annotations

import copy
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.server import ROOT

CHART = ROOT / "chart"
CRDS = [
    *sorted((CHART / "crds").glob("*.yaml")),
    *sorted((ROOT / "tests" / "fixtures" / "crds").glob("*.yaml")),
]
RELEASE = "multihome"
NAMESPACE = "multihome"


def helm() -> str:
    """The helm binary; the tier needs it as `make chart-check` does."""
    found = shutil.which("helm")
    if found is None:
        raise AssertionError("helm is not on PATH: .ci/run installs it (README, Helm chart)")
    return found


def render(
    values: Path | Mapping[str, Any] | None = None, api_versions: Sequence[str] = (), chart: Path = CHART
) -> list[dict[str, Any]]:
    """`helm template` of the chart, CRDs included; a mapping is passed as a values file.

    A values file, not --set: numbers in files reach templates as float64, which is how
    users (and values.yaml itself) hand them over. `api_versions` are the APIs beyond the
    built-in ones that `helm install` would find served (Capabilities).
    """
    args = [helm(), "template", RELEASE, str(chart), "--namespace", NAMESPACE, "--include-crds"]
    args += [f"--api-versions={version}" for version in api_versions]  # what the cluster serves
    with tempfile.TemporaryDirectory() as scratch:
        if isinstance(values, Path):
            args += ["--values", str(values)]
        elif values is not None:
            path = Path(scratch) / "values.yaml"
            path.write_text(yaml.safe_dump(dict(values)))
            args += ["--values", str(path)]
        done = subprocess.run(args, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"helm template failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(docs: Sequence[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    """The single rendered object of `kind`."""
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return dict(found[0])


def named(docs: Sequence[Mapping[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The rendered object of `kind` called `name`."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, rendered {len(found)}"
    return dict(found[0])


def served_at(docs: Sequence[Mapping[str, Any]], host: str, port: int) -> list[dict[str, Any]]:
    """The objects with each webhook's Service reference turned into a URL on `host:port`.

    Nothing routes Service traffic without a cluster network, so the API server is
    pointed at the process by URL; the host is the Service's DNS name, so the serving
    certificate the chart issues is checked exactly as in a cluster.
    """
    result: list[dict[str, Any]] = copy.deepcopy([dict(d) for d in docs])
    for doc in result:
        for hook in doc.get("webhooks", []) if doc["kind"].endswith("WebhookConfiguration") else []:
            service = hook["clientConfig"].pop("service")
            hook["clientConfig"]["url"] = f"https://{host}:{port}{service['path']}"
    return result
