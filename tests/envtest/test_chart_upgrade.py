"""`helm upgrade` from the one-Deployment release (chart 0.1.0) to this chart, on a real API server.

0.1.0 ran admission and every background task in one Deployment `multihome`; this chart
runs `multihome` (serve) and `multihome-controller`. The old release is the repository's
own tree at OLD_RELEASE (`git archive`), run as its image would run it: its chart rendered
by helm, its code in the containers. The upgrade is done as Helm and the cluster do it:
the new objects applied and the ones no longer rendered deleted; the Deployment rolls
with the chart's strategy (maxSurge 1, maxUnavailable 0), so the old Pod leaves the
Service's endpoints and is stopped only once a new serve Pod is Ready; the controller's
Deployment starts beside it. The Service is tests/envtest/service.py's kube-proxy stand-in.

Throughout, a client creates Pods through the API server (server-side dry run, so the
webhook answers every time) and every one must come back injected.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.envtest.chart import NAMESPACE, render, served_at
from tests.envtest.controlplane import ControlPlane, free_port
from tests.envtest.kubelet import Image, Kubelet, RunningPod
from tests.envtest.service import Backend, ServiceProxy
from tests.envtest.test_chart_installed import (
    DATAPLANE,
    SERVED,
    SERVICE_HOST,
    create_pod_when_injected,
    deployment,
    eventually,
    install,
    ip_blocks,
    policy_manifest,
)
from tests.server import ROOT
from tests.support import nad, namespace, pod, rule

# The last commit of chart 0.1.0: one Deployment, admission and the reconciler together.
OLD_RELEASE = "eaed7c6eebb941159b4a14aea111f6c5333b8558"
CONTROL_PLANE = {"hosts": {SERVICE_HOST: "127.0.0.1"}, "controller_manager": True}
LEASE = "multihome-reconciler"


def old_release(directory: Path) -> Path:
    """The 0.1.0 tree, as its image holds it."""
    archive, git = directory / "release.tar", shutil.which("git")
    if git is None:
        pytest.fail("the upgrade test reads chart 0.1.0 from the repository's history: it needs git")
    done = subprocess.run(
        [git, "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), OLD_RELEASE],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"the upgrade test needs commit {OLD_RELEASE[:12]} (chart 0.1.0) in this clone's history: "
            f"{done.stderr.strip()}"
        )
    tree = directory / "0.1.0"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="tar")
    return tree


def objects(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
        for d in docs
        if d["kind"] != "CustomResourceDefinition"  # Helm leaves crds/ alone on upgrade
    }


class Admissions:
    """Pods created through the API server one after another, until stopped; each outcome kept."""

    def __init__(self, plane: ControlPlane, ns: str) -> None:
        self.plane, self.ns = plane, ns
        self.outcomes: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Admissions:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        text = json.dumps(pod(self.ns, name="upf-during", labels={"app": "upf"}))
        while not self._stop.is_set():
            done = self.plane.kubectl(
                "create", "--dry-run=server", "-o", "json", "-f", "-", stdin=text, check=False
            )
            if done.returncode != 0:
                self.outcomes.append(done.stderr.strip())
            elif "multihome.io/injected-by" in json.loads(done.stdout)["metadata"].get("annotations", {}):
                self.outcomes.append("injected")
            else:
                self.outcomes.append("admitted without its networks")
            time.sleep(0.1)


def run(kubelet: Kubelet, port: int, container_port: int) -> RunningPod:
    return kubelet.run_pod(rewrite={"--bind": f"127.0.0.1:{port}"}, ports={container_port: port})


def test_helm_upgrade_from_one_deployment_keeps_admission_answered_and_moves_the_lease(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.fail("the chart tier runs containers as a kubelet does (mount namespaces): run it as root")
    plane, service = control_plane, ServiceProxy()
    old = old_release(tmp_path)
    old_docs = served_at(render(api_versions=SERVED, chart=old / "chart"), SERVICE_HOST, service.port)
    assert [d["metadata"]["name"] for d in old_docs if d["kind"] == "Deployment"] == ["multihome"]
    install(plane, old_docs)
    old_image = dataclasses.replace(Image.from_dockerfile(old / "Dockerfile"), source=old)
    pods: list[tuple[Kubelet, RunningPod]] = []

    def start(spec: dict[str, Any], name: str, container_port: int, image: Image | None = None) -> RunningPod:
        kubelet = Kubelet(
            plane, spec, NAMESPACE, tmp_path / name, pod_name=name, image=image or Image.from_dockerfile()
        )
        port = free_port()
        running = run(kubelet, port, container_port)
        pods.append((kubelet, running))
        if container_port == 8443:
            service.backends.append(Backend(port, lambda: running.ready))
        return running

    def holder() -> str:
        found = plane.kubectl("get", "lease", LEASE, "-n", NAMESPACE, "-o", "json", check=False)
        return str(json.loads(found.stdout)["spec"]["holderIdentity"]) if found.returncode == 0 else ""

    try:
        before = start(deployment(old_docs, "multihome"), "multihome-old", 8443, old_image)
        eventually(lambda: before.ready, 120, "the 0.1.0 Pod is Ready")
        plane.apply(
            namespace("team-a", **{"multihome.io/profile": "dataplane"}),
            nad("dp", "kube-system", DATAPLANE % "10.0.4.0/24"),
            rule("dataplane", "dataplane", app="upf", interface="net1"),
        )
        eventually(
            lambda: (
                plane.kubectl("get", "serviceaccount", "default", "-n", "team-a", check=False).returncode == 0
            )
        )
        create_pod_when_injected(plane, pod("team-a", name="upf-before", labels={"app": "upf"}))
        eventually(lambda: holder().startswith("multihome-old_"), 60, "the 0.1.0 Pod holds the Lease")

        with Admissions(plane, "team-a") as admissions:
            time.sleep(2)
            # helm upgrade: what the new chart renders is applied, what it no longer renders deleted.
            new_docs = served_at(render(api_versions=SERVED), SERVICE_HOST, service.port)
            plane.apply(*[d for d in new_docs if d["kind"] != "CustomResourceDefinition"])
            for kind, ns, name in sorted(objects(old_docs) - objects(new_docs)):
                plane.kubectl("delete", kind, name, *(["-n", ns] if ns else []), "--ignore-not-found")
            controller = start(deployment(new_docs, "multihome-controller"), "multihome-controller-0", 8080)
            after = start(deployment(new_docs, "multihome"), "multihome-new", 8443)
            eventually(lambda: after.ready, 180, "the new serve Pod is Ready")
            eventually(lambda: controller.ready, 60, "the controller is Ready")
            # maxUnavailable 0: only now does the old Pod go, out of the endpoints first.
            service.backends[0].terminating = True
            before.stop()
            eventually(
                lambda: holder().startswith("multihome-controller-0_"), 90, "the controller takes the Lease"
            )
            time.sleep(2)

        assert len(admissions.outcomes) >= 20, admissions.outcomes
        assert set(admissions.outcomes) == {"injected"}, [o for o in admissions.outcomes if o != "injected"]
        assert service.backends[1].port in service.connections, "the new serve Pod answered reviews"
        assert service.refused == 0
        # The reconciler runs again, now in the controller: a NAD's new range reaches a stored policy.
        plane.apply(policy_manifest("team-a"))
        eventually(
            lambda: ip_blocks(plane.get("networkpolicy", "upf-peers", "-n", "team-a")) == {"10.0.4.0/24"}
        )
        plane.apply(nad("dp", "kube-system", DATAPLANE % "10.0.9.0/24"))
        eventually(
            lambda: ip_blocks(plane.get("networkpolicy", "upf-peers", "-n", "team-a")) == {"10.0.9.0/24"},
            60,
            "the controller reconciles",
        )
    finally:
        for kubelet, running in reversed(pods):
            running.stop()
            kubelet.cleanup()
        service.close()
