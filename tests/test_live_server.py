"""The real server on live state: gunicorn workers watching a real HTTP API server."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.envtest.controlplane import free_port
from tests.fake_apiserver import FakeApiServer
from tests.server import ROOT, Server, running_server
from tests.support import (
    IPVLAN,
    dataplane_objects,
    make_request,
    make_review,
    nad,
    namespace,
    pod,
    rule,
    upf_policy,
)
from webhook.cluster.live import NADS_PATH, NAMESPACES_PATH, POLICIES_PATH, RULES_PATH


def _networks(server: Server) -> str | None:
    conn = server.connect()
    request = make_request(pod("core", labels={"app": "upf"}))
    status, review = server.post(conn, "/mutate/pods", make_review(request))
    conn.close()
    assert status == 200
    patch = review["response"].get("patch")
    if patch is None:
        return None
    value = json.loads(base64.b64decode(patch))[0]["value"]
    return str(value["k8s.v1.cni.cncf.io/networks"])


def test_injection_follows_namespace_labels_in_the_cluster(tmp_path: Path) -> None:
    api = FakeApiServer(bookmark_interval=0.5)
    api.put(NAMESPACES_PATH, namespace("core"))
    api.put(NADS_PATH, nad("dp", "kube-system", IPVLAN))
    api.put(RULES_PATH, rule("dataplane", "dataplane"))
    port = api.serve()
    try:
        with running_server(
            tmp_path, None, "--kubeconfig", str(api.kubeconfig(tmp_path, port)), workers=2
        ) as server:
            assert _networks(server) is None
            api.put(NAMESPACES_PATH, namespace("core", **{"multihome.io/profile": "dataplane"}))
            deadline = time.monotonic() + 10
            answers = set()
            while time.monotonic() < deadline:
                answers = {_networks(server) for _ in range(8)}  # both workers see the label
                if answers == {"kube-system/dp"}:
                    break
                time.sleep(0.1)
            assert answers == {"kube-system/dp"}
            status, body = server.get("/metrics")
            assert status == 200
            text = body.decode()
            assert 'multihome_state_synced{resource="namespaces"} 1.0' in text
            assert 'multihome_state_objects{kind="attachmentrules"} 1.0' in text
    finally:
        api.close()


def test_unready_while_the_api_server_is_unreachable(tmp_path: Path) -> None:
    api = FakeApiServer()
    port = api.serve()
    kubeconfig = api.kubeconfig(tmp_path, port)
    api.close()  # nothing listens there any more
    with running_server(tmp_path, None, "--kubeconfig", str(kubeconfig), workers=1, ready=False) as server:
        status, body = server.get("/readyz")
        assert status == 503
        assert json.loads(body)["status"] == "not ready"
        conn = server.connect()
        request = make_request(pod("core", labels={"app": "upf"}))
        status, review = server.post(conn, "/mutate/pods", make_review(request))
        conn.close()
        assert status == 200 and review["response"]["allowed"] is True


def test_serve_makes_no_write_and_takes_no_lease(tmp_path: Path) -> None:
    """Admission only reads: every request serve sends the API server is a GET."""
    api = FakeApiServer(bookmark_interval=0.5)
    for collection, obj in [*dataplane_objects("upf-1"), (POLICIES_PATH, upf_policy())]:
        api.put(collection, obj)
    port = api.serve()
    try:
        kubeconfig = str(api.kubeconfig(tmp_path, port))
        with running_server(tmp_path, None, "--kubeconfig", kubeconfig, workers=2) as server:
            assert _networks(server) is not None
            time.sleep(1.0)
        assert [r for r in api.requests if " " in r] == [], "no POST, PUT, PATCH or DELETE"
        assert not [r for r in api.requests if "networkpolicies" in r], "policies are the controller's"
        assert not api.collections["/apis/coordination.k8s.io/v1/leases"].objects
    finally:
        api.close()


def test_the_controller_reconciles_existing_policies_and_holds_the_lease(tmp_path: Path) -> None:
    api = FakeApiServer(bookmark_interval=0.5)
    for collection, obj in [*dataplane_objects("upf-1"), (POLICIES_PATH, upf_policy())]:
        api.put(collection, obj)
    port = api.serve()
    health = free_port()
    log = (tmp_path / "controller.log").open("wb")
    kubeconfig = str(api.kubeconfig(tmp_path, port))
    argv = [
        "controller",
        "--kubeconfig",
        kubeconfig,
        "--bind",
        f"127.0.0.1:{health}",
        "--lease-namespace",
        "multihome",
    ]
    controller = subprocess.Popen(
        [sys.executable, "-m", "webhook", *argv],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        policy = api.collections[POLICIES_PATH].objects[("core", "upf")]
        while time.monotonic() < deadline and "multihome.io/enrichment" not in (
            policy["metadata"].get("annotations") or {}
        ):
            time.sleep(0.1)
            policy = api.collections[POLICIES_PATH].objects[("core", "upf")]
        assert {"ipBlock": {"cidr": "10.0.4.0/24"}} in policy["spec"]["ingress"][0]["from"]
        lease = api.collections["/apis/coordination.k8s.io/v1/leases"].objects[
            ("multihome", "multihome-reconciler")
        ]
        assert lease["spec"]["holderIdentity"]
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=5) as ready:
            assert json.loads(ready.read()) == {"status": "ready", "leader": True}
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=5) as metrics:
            assert "multihome_reconciler_leader 1.0" in metrics.read().decode()
    finally:
        controller.send_signal(signal.SIGTERM)
        code = controller.wait(15)
        log.close()
        api.close()
    assert code == 0, (tmp_path / "controller.log").read_text()
