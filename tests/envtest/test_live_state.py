"""Live state against a real API server and its watch cache, under a running `serve`.

What a cluster does to a webhook's caches, done for real: a CRD that arrives after the
server started, bookmarks, the API server going away for 20 s (with etcd's history
compacted meanwhile, so every watch comes back to 410 Gone) and coming back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.envtest.chart import CHART
from tests.envtest.controlplane import ControlPlane
from tests.envtest.test_chart_installed import DATAPLANE, eventually
from tests.server import Server, running_server
from tests.support import make_request, make_review, nad, namespace, pod, rule
from tests.test_packaging import build_and_install
from webhook.cluster.kube import Endpoint, HttpKubeApi
from webhook.cluster.live import NAMESPACES_PATH

NAD_CRD = CHART.parent / "tests" / "fixtures" / "crds" / "network-attachment-definitions.k8s.cni.cncf.io.yaml"
RULE_CRD = CHART / "crds" / "attachmentrules.multihome.io.yaml"
# What admission watches: no NetworkPolicies, those are the controller's.
RESOURCES = ("namespaces", "networkattachmentdefinitions", "attachmentrules", "pods")


@pytest.fixture(scope="module")
def server(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`serve` on the live cluster; the AttachmentRule CRD is not installed yet."""
    plane = control_plane
    plane.kubectl("apply", "-f", str(NAD_CRD))
    plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    plane.apply(
        namespace("team-a", **{"multihome.io/profile": "dataplane"}),
        nad("dp", "kube-system", DATAPLANE % "10.0.4.0/24"),
    )
    workdir = tmp_path_factory.mktemp("live")
    with running_server(workdir, None, "--kubeconfig", str(plane.kubeconfig), workers=1) as s:
        yield s


def metrics(server: Server) -> dict[str, float]:
    """The state gauges, keyed `name{resource}`."""
    status, body = server.get("/metrics")
    assert status == 200
    found = {}
    for line in body.decode().splitlines():
        match = re.match(r'(multihome_state_\w+)\{resource="(\w+)"\} (\S+)', line)
        if match:
            found[f"{match[1]}{{{match[2]}}}"] = float(match[3])
    return found


def injected(server: Server, pod_name: str = "upf") -> bool:
    """Whether /mutate/pods, asked as the API server asks, adds the dataplane network."""
    review = make_review(make_request(pod("team-a", name=pod_name, labels={"app": "upf"})))
    conn = server.connect()
    try:
        status, answer = server.post(conn, "/mutate/pods", review)
    finally:
        conn.close()
    assert status == 200, answer
    assert answer["response"]["allowed"] is True
    return "patch" in answer["response"]


def test_a_crd_installed_after_start_is_picked_up(control_plane: ControlPlane, server: Server) -> None:
    assert metrics(server)["multihome_state_resource_missing{attachmentrules}"] == 1
    assert not injected(server)
    control_plane.kubectl("apply", "-f", str(RULE_CRD))
    control_plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    control_plane.apply(rule("dataplane", "dataplane", app="upf"))
    eventually(lambda: injected(server), 60, "the rule reached the cache once its CRD was served")
    assert metrics(server)["multihome_state_resource_missing{attachmentrules}"] == 0


def test_kubectl_multihome_audits_the_cluster(
    control_plane: ControlPlane, server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The console script as a kubectl plugin (`pip install .` puts kubectl-multihome on PATH)."""
    _, site = build_and_install(tmp_path_factory.mktemp("plugin"))
    env = {**os.environ, "PATH": f"{site / 'bin'}:{os.environ['PATH']}", "PYTHONPATH": str(site)}
    kubectl = control_plane.assets / "kubectl"
    plugins = subprocess.run(
        [str(kubectl), "plugin", "list"], capture_output=True, text=True, env=env, check=False
    )
    assert str(site / "bin" / "kubectl-multihome") in plugins.stdout
    done = subprocess.run(
        [
            str(kubectl),
            "multihome",
            "audit",
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["source"] == control_plane.url
    assert "NetworkAttachmentDefinition" in {f["kind"] for f in report["findings"]}


def test_bookmarks_arrive_on_a_quiet_watch(control_plane: ControlPlane) -> None:
    """The API server sends one shortly before the watch's deadline, with a newer version."""
    api = HttpKubeApi(Endpoint.load(control_plane.kubeconfig))
    _, version = api.list(NAMESPACES_PATH)
    control_plane.kubectl("create", "configmap", "elsewhere", "-n", "default")
    events = list(api.watch(NAMESPACES_PATH, version, timeout_seconds=10))
    bookmarks = [e["object"]["metadata"]["resourceVersion"] for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, [e["type"] for e in events]
    assert int(bookmarks[-1]) > int(version)


def test_the_api_server_away_for_20_seconds(control_plane: ControlPlane, server: Server) -> None:
    plane = control_plane
    eventually(lambda: injected(server), 60, "the rule is in the cache")
    before = metrics(server)
    # A write to a resource nobody here watches: every cache's version is now behind etcd's.
    plane.kubectl("create", "configmap", "bump", "-n", "default")
    plane.stop_apiserver()
    stopped = time.monotonic()
    plane.compact_etcd()
    answers: list[bool] = []
    while time.monotonic() - stopped < 20:
        answers.append(injected(server))
        time.sleep(1)
    assert answers and all(answers), "reviews are answered from the last state while the API server is away"
    status, body = server.get("/readyz")
    assert status == 200
    assert json.loads(body)["degraded"] == sorted(RESOURCES)
    away = metrics(server)
    for resource in RESOURCES:
        assert away[f"multihome_state_watching{{{resource}}}"] == 0
        assert (
            away[f"multihome_state_watch_errors{{{resource}}}"]
            > before[f"multihome_state_watch_errors{{{resource}}}"]
        )
        assert away[f"multihome_state_last_event_age_seconds{{{resource}}}"] >= 15

    plane.start_apiserver()
    eventually(lambda: json.loads(server.get("/readyz")[1]) == {"status": "ready"}, 90, "every watch is back")
    back = metrics(server)
    for resource in RESOURCES:
        # The compacted history makes each resumed watch answer 410 Gone: each cache relisted.
        assert (
            back[f"multihome_state_relists{{{resource}}}"] > before[f"multihome_state_relists{{{resource}}}"]
        )
        assert back[f"multihome_state_watching{{{resource}}}"] == 1
    # And the caches converge: a change made after the outage reaches decisions.
    plane.kubectl("label", "namespace", "team-a", "multihome.io/profile=none", "--overwrite")
    eventually(lambda: not injected(server), 30, "the relabel reached the cache")
