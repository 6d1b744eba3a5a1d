"""The chart as installed, on a real API server: its objects, its ServiceAccount and RBAC, and
its Deployment's init and main containers run with the args and env `helm template` renders.

What stands in for a cluster node (tests/envtest/kubelet.py): a mount namespace per container
with the ServiceAccount token, the Secret volume and the emptyDir at their mountPaths, a
read-only root and the securityContext's user. The API server reaches the webhook by URL at
the Service's DNS name (mapped to 127.0.0.1 in the API server's own /etc/hosts): with no
cluster network, nothing routes the Service itself. Only `--bind` is rewritten.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certs.issue import CertificateRequest, ensure_certificates
from tests.envtest.chart import CRDS, NAMESPACE, render, served_at
from tests.envtest.controlplane import ControlPlane, Process, free_port
from tests.envtest.kubelet import FailedMount, Kubelet, RunningPod
from tests.server import ROOT
from tests.support import nad, namespace, pod, rule

SERVICE_HOST = f"multihome.{NAMESPACE}.svc"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:multihome"
CONTROLLER_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:multihome-controller"
CONTROL_PLANE = {"hosts": {SERVICE_HOST: "127.0.0.1"}, "controller_manager": True}
# What `helm install` finds served here beyond the built-in APIs: the policy report CRDs.
SERVED = ("wgpolicyk8s.io/v1alpha2",)
DATAPLANE = '{"cniVersion": "0.4.0", "type": "ipvlan", "master": "eth1", "mode": "l2", "ipam": {"type": "host-local", "subnet": "%s"}}'
VPC_CNI = '{"cniVersion": "0.4.0", "name": "vpc", "type": "aws-cni", "vethPrefix": "eni"}'


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; the last value otherwise fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what or check}")
        time.sleep(0.25)


@dataclass
class Installed:
    """The release on the control plane, and its two Pods as the kubelet runs them."""

    plane: ControlPlane
    kubelet: Kubelet
    pod: RunningPod
    port: int
    ca: Path
    init_output: str
    controller_kubelet: Kubelet
    controller: RunningPod
    controller_port: int

    @property
    def server(self) -> Process:
        return self.pod.process("webhook")

    def controller_get(self, path: str) -> tuple[int, str]:
        """GET on the controller's own port (plain HTTP: probes and Prometheus only)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.controller_port}{path}", timeout=5
            ) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode()

    def secret(self) -> dict[str, bytes]:
        return tls_secret(self.plane)

    def https_get(self, path: str) -> tuple[int, str]:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.check_hostname = False  # dialled by IP; the API server checks the name
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{self.port}{path}", timeout=5, context=context
            ) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode()

    def server_log(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.server.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"message": line})
        return lines


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"message": line})
    return lines


def tls_secret(plane: ControlPlane) -> dict[str, bytes]:
    """The chart's certificate Secret, decoded."""
    data = plane.get("secret", "multihome-tls", "-n", NAMESPACE)["data"]
    return {key: base64.b64decode(value) for key, value in data.items()}


def install(plane: ControlPlane, docs: list[dict[str, Any]]) -> None:
    """What `helm install` does with the rendered objects: CRDs first, then the rest."""
    # The release namespace enforces the restricted Pod Security Standard: the chart says its Pods meet it.
    plane.apply(namespace(NAMESPACE, **{"pod-security.kubernetes.io/enforce": "restricted"}))
    plane.kubectl("apply", *[arg for crd in CRDS for arg in ("-f", str(crd))])
    plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    plane.apply(*[d for d in docs if d["kind"] != "CustomResourceDefinition"])


def deployment(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The Pod spec of the rendered Deployment `name`."""
    (found,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    return dict(found["spec"]["template"]["spec"])


@contextmanager
def release_pods(
    plane: ControlPlane, docs: list[dict[str, Any]], workdir: Path, port: int, controller_port: int
) -> Iterator[tuple[Kubelet, RunningPod, Kubelet, RunningPod]]:
    """The release's two Pods as a kubelet runs them: the controller's first, Ready; then serve's.

    Yields (serve's kubelet, serve's Pod, the controller's kubelet, its Pod); serve may not be Ready yet.
    """
    controller_kubelet = Kubelet(
        plane,
        deployment(docs, "multihome-controller"),
        NAMESPACE,
        workdir / "controller",
        pod_name="multihome-controller-0",
    )
    kubelet = Kubelet(plane, deployment(docs, "multihome"), NAMESPACE, workdir / "serve")
    try:
        controller = controller_kubelet.run_pod(
            rewrite={"--bind": f"127.0.0.1:{controller_port}"}, ports={8080: controller_port}
        )
        try:
            eventually(lambda: controller.ready, 60, "the controller is Ready by its readiness probe")
            # FailedMount here is the day-one bug: a volume whose Secret the chart does not render.
            pod = kubelet.run_pod(rewrite={"--bind": f"127.0.0.1:{port}"}, ports={8443: port})
            try:
                yield kubelet, pod, controller_kubelet, controller
            finally:
                pod.stop()
        finally:
            controller.stop()
    finally:
        kubelet.cleanup()
        controller_kubelet.cleanup()


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """`helm install multihome ./chart -n multihome` with default values: the controller's Pod, then serve's."""
    if os.geteuid() != 0:
        pytest.fail("the chart tier runs containers as a kubelet does (mount namespaces): run it as root")
    plane, port, controller_port = control_plane, free_port(), free_port()
    docs = served_at(render(api_versions=SERVED), SERVICE_HOST, port)
    install(plane, docs)
    workdir = tmp_path_factory.mktemp("kubelet")
    with release_pods(plane, docs, workdir, port, controller_port) as (
        kubelet,
        pod,
        controller_kubelet,
        controller,
    ):
        ca = workdir / "ca.crt"
        ca.write_bytes(tls_secret(plane)["ca.crt"])
        installed = Installed(
            plane,
            kubelet,
            pod,
            port,
            ca,
            controller.init_output["certificates"],
            controller_kubelet,
            controller,
            controller_port,
        )
        eventually(lambda: _ready(installed), 120, "the webhook is Ready by its own readiness probe")
        yield installed


def _ready(installed: Installed) -> bool:
    for running, name in ((installed.pod, "webhook"), (installed.controller, "controller")):
        container = running.containers[name]
        if container.exits:
            raise AssertionError(f"container {name} exited or was killed: {container.exits[-1]}")
    return installed.pod.ready


# --- what a user sees ------------------------------------------------------------------------


def policy_manifest(ns: str) -> dict[str, Any]:
    upf = {"matchLabels": {"app": "upf"}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "upf-peers", "namespace": ns},
        "spec": {
            "podSelector": upf,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": upf}]}],
        },
    }


def ip_blocks(policy: dict[str, Any]) -> set[str]:
    return {
        peer["ipBlock"]["cidr"]
        for entry in policy["spec"].get("ingress", [])
        for peer in entry.get("from", [])
        if "ipBlock" in peer
    }


@pytest.fixture(scope="module")
def dataplane(installed: Installed) -> str:
    """A team namespace on the dataplane profile, a shared NAD and a rule, seen by the server."""
    plane = installed.plane
    plane.apply(
        namespace("team-a", **{"multihome.io/profile": "dataplane"}),
        nad("dp", "kube-system", DATAPLANE % "10.0.4.0/24"),
        rule("dataplane", "dataplane", app="upf", interface="net1"),
    )
    eventually(
        lambda: plane.kubectl("get", "serviceaccount", "default", "-n", "team-a", check=False).returncode == 0
    )
    return "team-a"


def create_pod_when_injected(plane: ControlPlane, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create the Pod once a server-side dry run shows the webhook has the rule (watch lag)."""
    text = json.dumps(manifest)

    def injected() -> bool:
        done = plane.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=text)
        return "multihome.io/injected-by" in json.loads(done.stdout)["metadata"].get("annotations", {})

    eventually(injected, what="the rule reached the webhook's cache")
    created: dict[str, Any] = json.loads(plane.kubectl("create", "-o", "json", "-f", "-", stdin=text).stdout)
    return created


def test_the_init_container_issued_the_pair_and_wrote_the_ca_bundle(installed: Installed) -> None:
    secret = installed.secret()
    assert {"ca.crt", "tls.crt", "tls.key"} <= set(secret)
    bundle = base64.b64encode(secret["ca.crt"]).decode()
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        hooks = installed.plane.get(kind, "multihome")["webhooks"]
        assert [h["clientConfig"].get("caBundle") for h in hooks] == [bundle] * len(hooks)
    assert "issued the pair in Secret multihome/multihome-tls" in installed.init_output


def test_the_deployment_pods_are_admitted_as_restricted(installed: Installed) -> None:
    """The ReplicaSet controller creates the replicas through admission (Pod Security, priority)."""

    def replicas(name: str) -> int:
        selector = f"app.kubernetes.io/name={name}"
        return len(installed.plane.get("pods", "-n", NAMESPACE, "-l", selector)["items"])

    eventually(lambda: replicas("multihome") == 3, 60, "the ReplicaSet created 3 webhook Pods")
    eventually(lambda: replicas("multihome-controller") == 2, 60, "and 2 controller Pods")
    events = installed.plane.get("events", "-n", NAMESPACE, "--field-selector", "reason=FailedCreate")
    assert [e["message"] for e in events["items"]] == []


def test_a_pod_in_an_opted_in_namespace_gets_its_networks(installed: Installed, dataplane: str) -> None:
    created = create_pod_when_injected(installed.plane, pod(dataplane, name="upf-0", labels={"app": "upf"}))
    annotations = created["metadata"]["annotations"]
    assert annotations["k8s.v1.cni.cncf.io/networks"] == "kube-system/dp@net1"
    assert annotations["multihome.io/injected-by"] == "dataplane"


@pytest.mark.parametrize("where", ["team-a", "kube-system"])
def test_a_vpc_cni_nad_is_refused(installed: Installed, dataplane: str, where: str) -> None:
    done = installed.plane.kubectl(
        "apply", "-f", "-", stdin=json.dumps(nad("vpc-secondary", where, VPC_CNI)), check=False
    )
    assert done.returncode != 0
    assert (
        'admission webhook "validate.networkattachmentdefinitions.multihome.io" denied the request'
        in done.stderr
    )
    assert "aws-cni" in done.stderr


def cluster_role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": list(rules),
    }


def binding(role: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{role}-{user}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def test_label_admins_are_whom_the_authorizer_allows(installed: Installed, dataplane: str) -> None:
    """No static list by default: the real authorizer answers the SubjectAccessReview."""
    plane = installed.plane
    plane.apply(namespace("team-b"))
    editor = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "patch", "update"]}
    plane.apply(
        cluster_role("namespace-editor", editor),
        # The chart's ClusterRole for one namespace only, as a platform team copies it.
        cluster_role(
            "label-team-a",
            {
                "apiGroups": ["multihome.io"],
                "resources": ["namespaces"],
                "verbs": ["label"],
                "resourceNames": [dataplane],
            },
        ),
        binding("namespace-editor", "alice"),
        binding("namespace-editor", "carol"),
        binding("label-team-a", "carol"),
        binding("cluster-admin", "root"),
        binding("multihome-label-admin", "paula"),
        binding("namespace-editor", "paula"),
    )

    def relabel(where: str, user: str, value: str) -> subprocess.CompletedProcess[str]:
        args = ("label", "namespace", where, f"multihome.io/profile={value}", "--overwrite", f"--as={user}")
        return plane.kubectl(*args, check=False)

    denied = relabel(dataplane, "alice", "signaling")
    assert denied.returncode != 0
    assert 'admission webhook "validate.namespaces.multihome.io" denied the request' in denied.stderr
    assert 'user "alice" may not change them (the authorizer refused)' in denied.stderr
    assert "bind the ClusterRole multihome-label-admin" in denied.stderr
    assert "policy.labelAdmins" in denied.stderr
    assert plane.kubectl("label", "namespace", dataplane, "team=a", "--as=alice", check=False).returncode == 0
    assert relabel(dataplane, "root", "signaling").returncode == 0, "cluster-admin by name"
    assert relabel(dataplane, "carol", "dataplane").returncode == 0, "the ClusterRole for this namespace"
    elsewhere = relabel("team-b", "carol", "dataplane")
    assert elsewhere.returncode != 0 and 'user "carol" may not change them' in elsewhere.stderr
    assert relabel("team-b", "paula", "dataplane").returncode == 0, "the chart's ClusterRole, bound"
    assert plane.kubectl("label", "namespace", "team-b", "multihome.io/profile-").returncode == 0, "the admin"
    assert plane.get("namespace", dataplane)["metadata"]["labels"]["multihome.io/profile"] == "dataplane"


def test_a_network_policy_is_enriched_and_follows_its_network(installed: Installed, dataplane: str) -> None:
    plane = installed.plane
    create_pod_when_injected(plane, pod(dataplane, name="upf-1", labels={"app": "upf"}))
    eventually(
        lambda: (
            "10.0.4.0/24"
            in ip_blocks(
                json.loads(
                    plane.kubectl(
                        "create",
                        "--dry-run=server",
                        "-o",
                        "json",
                        "-f",
                        "-",
                        stdin=json.dumps(policy_manifest(dataplane)),
                    ).stdout
                )
            )
        ),
        what="the upf Pods reached the webhook's cache",
    )
    plane.apply(policy_manifest(dataplane))
    stored = plane.get("networkpolicy", "upf-peers", "-n", dataplane)
    assert ip_blocks(stored) == {"10.0.4.0/24"}
    assert "multihome.io/enrichment" in stored["metadata"]["annotations"]

    plane.apply(nad("dp", "kube-system", DATAPLANE % "10.0.8.0/24"))
    eventually(
        lambda: ip_blocks(plane.get("networkpolicy", "upf-peers", "-n", dataplane)) == {"10.0.8.0/24"},
        what="the reconciler re-enriched the stored policy",
    )
    companion = eventually(
        lambda: plane.get("multi-networkpolicies", "-n", dataplane)["items"], what="a companion policy"
    )

    def reasons() -> set[str]:
        # The core/v1 view of events.k8s.io Events, selected as `kubectl describe` selects them.
        selector = "involvedObject.kind=NetworkPolicy,involvedObject.name=upf-peers"
        found = plane.get("events", "-n", dataplane, "--field-selector", selector)["items"]
        return {e["reason"] for e in found if e["reportingComponent"] == "multihome.io/reconciler"}

    assert eventually(lambda: {"Enriched", "CompanionCreated"} <= reasons(), what="the reconciler's Events")
    assert companion[0]["metadata"]["annotations"]["k8s.v1.cni.cncf.io/policy-for"]


def test_the_reconciler_holds_its_lease(installed: Installed) -> None:
    lease = eventually(
        lambda: (
            installed.plane.kubectl(
                "get", "lease", "multihome-reconciler", "-n", NAMESPACE, "-o", "json", check=False
            ).stdout
        ),
        what="the Lease exists",
    )
    spec = json.loads(lease)["spec"]
    assert spec["holderIdentity"].startswith("multihome-controller-0_"), "the controller leads, never serve"
    assert spec["leaseDurationSeconds"] > 0


def test_kubectl_get_attachmentrules_says_whether_each_works(installed: Installed, dataplane: str) -> None:
    plane = installed.plane
    broken = rule("dataplane-extra", "dataplane", app="upf")
    broken["spec"]["networks"] = [{"name": "not-there", "namespace": "kube-system", "interface": "net9"}]
    plane.apply(broken)

    def conditions() -> dict[str, tuple[str, str, int]]:
        found = {}
        for item in plane.get("attachmentrules")["items"]:
            status = item.get("status") or {}
            for condition in status.get("conditions", []):
                if (
                    condition["type"] == "Ready"
                    and status.get("observedGeneration") == item["metadata"]["generation"]
                ):
                    found[item["metadata"]["name"]] = (
                        condition["status"],
                        condition["reason"],
                        status["matchedNamespaces"],
                    )
        return found

    eventually(
        lambda: (
            conditions()
            == {"dataplane": ("True", "Ready", 1), "dataplane-extra": ("False", "NetworkMissing", 1)}
        ),
        30,
        "the leader wrote both rules' status",
    )
    table = plane.kubectl("get", "attachmentrules", "-o", "wide").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "READY", "NAMESPACES"]
    assert table[2].split()[:3] == ["dataplane-extra", "False", "1"]
    warnings = plane.get("events.events.k8s.io", "-n", "default", "--field-selector", "reason=NetworkMissing")
    assert [(e["regarding"]["name"], e["type"]) for e in warnings["items"]] == [
        ("dataplane-extra", "Warning")
    ]
    described = plane.kubectl("describe", "attachmentrule", "dataplane-extra").stdout
    assert "NetworkMissing" in described and "kube-system/not-there" in described, described
    plane.kubectl("delete", "attachmentrule", "dataplane-extra")


def test_the_leader_keeps_the_findings_as_policy_reports(installed: Installed, dataplane: str) -> None:
    plane = installed.plane

    def report() -> dict[str, Any] | None:
        found = plane.get("policyreports", "-n", "kube-system")["items"]
        return next((r for r in found if r["metadata"]["name"] == "multihome"), None)

    kept = eventually(report, 30, "the leader wrote the kube-system report")
    assert kept["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "multihome"}
    checks = {(r["policy"], r["resources"][0]["name"]) for r in kept["results"]}
    assert ("MH051", "dp") in checks, checks
    assert kept["summary"]["warn"] >= 1
    status, body = installed.controller_get("/metrics")
    assert status == 200
    assert 'multihome_policy_reports_api{api="wgpolicyk8s.io/v1alpha2"} 1.0' in body
    assert "multihome_reconciler_leader 1.0" in body
    status, body = installed.https_get("/metrics")
    assert status == 200
    assert "multihome_reconciler_leader 1.0" not in body, "serve takes no part in the Lease"
    found = re.search(r"^multihome_certificate_expiry_timestamp_seconds (\S+)$", body, re.MULTILINE)
    assert found is not None
    expiry = float(found[1])
    assert 360 * 86400 < expiry - time.time() < 366 * 86400, "the self-managed pair is valid for a year"


def test_a_second_init_run_keeps_the_pair(installed: Installed) -> None:
    before = installed.secret()
    output = installed.controller_kubelet.run_to_completion("certificates")
    assert "kept the pair in Secret multihome/multihome-tls" in output
    assert installed.secret() == before


def test_neither_identity_was_refused_and_neither_logged_an_error(installed: Installed) -> None:
    time.sleep(1)  # the reconciler's last writes
    refused = [
        e
        for e in installed.plane.audit_events()
        if e["user"]["username"] in (SERVICE_ACCOUNT, CONTROLLER_ACCOUNT)
        and e.get("responseStatus", {}).get("code") == 403
    ]
    assert refused == []
    log = installed.server_log() + json_lines(installed.controller.process("controller").log_path)
    assert [line for line in log if line.get("level") not in ("debug", "info", "warning")] == []
    complaints = [json.dumps(line) for line in log if line.get("level") == "warning"]
    assert [line for line in complaints if "403" in line or "forbidden" in line.lower()] == []


def test_the_init_container_repairs_a_broken_pair(installed: Installed) -> None:
    plane, before = installed.plane, installed.secret()
    broken = base64.b64encode(b"not a certificate").decode()
    plane.kubectl(
        "patch", "secret", "multihome-tls", "-n", NAMESPACE, "-p", json.dumps({"data": {"tls.crt": broken}})
    )
    output = installed.controller_kubelet.run_to_completion("certificates")
    after = installed.secret()
    assert "issued the pair in Secret multihome/multihome-tls" in output
    assert after["ca.crt"] == before["ca.crt"], "the CA is kept, so the caBundle stays valid"
    assert after["tls.crt"].startswith(b"-----BEGIN CERTIFICATE-----")


def test_companions_follow_their_policy_and_lookups_reach_uncached_objects(
    installed: Installed, dataplane: str
) -> None:
    plane = installed.plane
    if not plane.kubectl("get", "networkpolicy", "upf-peers", "-n", dataplane, check=False).stdout:
        pytest.fail("needs the enriched policy of test_a_network_policy_is_enriched_and_follows_its_network")
    before = plane.get("multi-networkpolicies", "-n", dataplane)["items"][0]["metadata"]["resourceVersion"]
    changed = policy_manifest(dataplane)
    changed["spec"]["ingress"][0]["ports"] = [{"protocol": "UDP", "port": 2152}]
    plane.apply(changed)
    eventually(
        lambda: (
            plane.get("multi-networkpolicies", "-n", dataplane)["items"][0]["metadata"]["resourceVersion"]
            != before
        ),
        what="the companion updated",
    )
    # No longer about multi-homed Pods: the reconciler deletes the companion (a deleted policy's
    # companion is the garbage collector's, through its ownerReference).
    elsewhere = policy_manifest(dataplane)
    elsewhere["spec"]["podSelector"] = elsewhere["spec"]["ingress"][0]["from"][0]["podSelector"] = {
        "matchLabels": {"app": "single-homed"}
    }
    plane.apply(elsewhere)
    eventually(
        lambda: not plane.get("multi-networkpolicies", "-n", dataplane)["items"], what="the companion deleted"
    )
    plane.kubectl("delete", "networkpolicy", "upf-peers", "-n", dataplane)
    # A reference to a NAD nobody created: the webhook looks it up rather than trust its cache.
    ghost = pod(
        dataplane,
        name="ghost",
        labels={"app": "probe"},
        annotations={"k8s.v1.cni.cncf.io/networks": "ghost/none"},
    )
    done = plane.kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(ghost), check=False)
    assert "ghost/none" in done.stderr + done.stdout


def rbac_grants(docs: list[dict[str, Any]], account: str) -> set[tuple[str, str, str, str, str]]:
    """(group, resource, verb, namespace, name) of every grant to the ServiceAccount `account`; '' = any."""
    bound = {
        (doc["roleRef"]["kind"], doc["roleRef"]["name"])
        for doc in docs
        if doc["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and any(s.get("kind") == "ServiceAccount" and s.get("name") == account for s in doc["subjects"])
    }
    grants = set()
    for doc in docs:
        if (doc["kind"], doc["metadata"]["name"]) not in bound:
            continue  # a role the chart ships for people to bind (the label admins')
        for item in doc["rules"]:
            for group in item["apiGroups"]:
                for resource in item["resources"]:
                    for verb in item["verbs"]:
                        for name in item.get("resourceNames", [""]):
                            grants.add((group, resource, verb, doc["metadata"].get("namespace", ""), name))
    return grants


def covers(grant: tuple[str, str, str, str, str], call: tuple[str, str, str, str, str]) -> bool:
    return grant[:3] == call[:3] and grant[3] in ("", call[3]) and grant[4] in ("", call[4])


@pytest.mark.parametrize("user", [SERVICE_ACCOUNT, CONTROLLER_ACCOUNT])
def test_rbac_is_exactly_what_each_identity_uses(installed: Installed, user: str) -> None:
    """By the real authorizer: everything each identity did was allowed, every grant it has was used."""
    calls = set()
    for event in installed.plane.audit_events():
        if event["user"]["username"] != user or "objectRef" not in event:
            continue
        ref = event["objectRef"]
        assert event.get("responseStatus", {}).get("code") != 403, event
        calls.add(
            (
                ref.get("apiGroup", ""),
                "/".join(filter(None, (ref["resource"], ref.get("subresource")))),
                event["verb"],
                ref.get("namespace", ""),
                ref.get("name", ""),
            )
        )
    grants = rbac_grants(render(api_versions=SERVED), user.rpartition(":")[2])
    assert sorted(c for c in calls if not any(covers(g, c) for g in grants)) == []
    unused = {g for g in grants if not any(covers(g, c) for c in calls)}
    not_driven = set(NOT_DRIVEN_HERE[user])
    assert unused <= not_driven, f"granted but never used: {sorted(unused - not_driven)}"
    for group, resource, verb, _, _ in not_driven:
        target = f"{resource}.{group}" if group else resource
        done = installed.plane.kubectl("auth", "can-i", verb, target, "-A", f"--as={user}", check=False)
        assert done.stdout.strip() == "yes", (verb, target)


# Grants this run does not reach (each still checked granted, above), and what drives them
# deterministically instead: the direct GET of a namespace created a moment ago happens only
# when a Pod's admission beats the namespace's watch event, and an Event's series is patched
# only when the same Event recurs 30 s after the first (both in tests/test_chart.py); policy
# reports are updated, deleted and kept cluster-wide from the second pass on, a minute after
# the first (tests/test_policy_reports.py).
NOT_DRIVEN_HERE = {
    SERVICE_ACCOUNT: {
        ("", "namespaces", "get", "", ""): "lookup of a namespace not yet in the cache",
    },
    CONTROLLER_ACCOUNT: {
        ("", "namespaces", "get", "", ""): "lookup of a namespace not yet in the cache",
        ("events.k8s.io", "events", "patch", "", ""): "an Event series growing",
        ("wgpolicyk8s.io", "policyreports", "update", "", ""): "a report whose findings changed",
        ("wgpolicyk8s.io", "policyreports", "delete", "", ""): "a namespace with nothing left to report",
        ("wgpolicyk8s.io", "clusterpolicyreports", "create", "", ""): "findings on cluster-scoped objects",
        ("wgpolicyk8s.io", "clusterpolicyreports", "update", "", ""): "the cluster report changing",
        ("wgpolicyk8s.io", "clusterpolicyreports", "delete", "", ""): "the cluster report emptied",
    },
}


NEIGHBOURING_RIGHTS = [
    "list secrets -n multihome",
    "get secrets/other -n multihome",
    "get secrets/multihome-tls -n kube-system",
    "create pods -n team-a",
    "patch pods -n team-a",
    "update namespaces",
    "delete networkpolicies -n team-a",
    "patch validatingwebhookconfigurations/someone-else",
    "update leases/someone-else -n multihome",
    "create leases -n kube-system",
    "create network-attachment-definitions.k8s.cni.cncf.io -n team-a",
    "update attachmentrules.multihome.io",
]
# Everything the controller may write; the admission identity may do none of it.
CONTROLLER_WRITES = [
    "get secrets/multihome-tls -n multihome",
    "update secrets/multihome-tls -n multihome",
    "patch networkpolicies -n team-a",
    "create multi-networkpolicies.k8s.cni.cncf.io -n team-a",
    "patch attachmentrules.multihome.io --subresource=status",
    "create events.events.k8s.io -n team-a",
    "create leases -n multihome",
    "update leases/multihome-reconciler -n multihome",
    "patch mutatingwebhookconfigurations/multihome",
]


def can_i(installed: Installed, attempt: str, user: str) -> str:
    done = installed.plane.kubectl("auth", "can-i", *attempt.split(), f"--as={user}", check=False)
    return done.stdout.strip()


@pytest.mark.parametrize("attempt", NEIGHBOURING_RIGHTS)
def test_neither_service_account_can_do_more(installed: Installed, attempt: str) -> None:
    assert (can_i(installed, attempt, SERVICE_ACCOUNT), can_i(installed, attempt, CONTROLLER_ACCOUNT)) == (
        "no",
        "no",
    )


@pytest.mark.parametrize("attempt", CONTROLLER_WRITES)
def test_only_the_controller_writes(installed: Installed, attempt: str) -> None:
    assert (can_i(installed, attempt, SERVICE_ACCOUNT), can_i(installed, attempt, CONTROLLER_ACCOUNT)) == (
        "no",
        "yes",
    )


def test_serve_mounts_the_serving_pair_and_never_the_ca_key(installed: Installed) -> None:
    (tls,) = [v for v in installed.kubelet.pod_spec["volumes"] if v["name"] == "tls"]
    assert [item["key"] for item in tls["secret"]["items"]] == ["tls.crt", "tls.key"]
    mounted = installed.kubelet.volumes["tls"]
    assert sorted(p.name for p in mounted.iterdir() if not p.name.startswith("..")) == ["tls.crt", "tls.key"]
    assert "volumes" not in installed.controller_kubelet.pod_spec or all(
        "secret" not in v for v in installed.controller_kubelet.pod_spec["volumes"]
    ), "the controller reads its Secret through the API"


def test_killing_the_active_controller_moves_the_lease_and_admission_goes_on(
    installed: Installed, dataplane: str, tmp_path: Path
) -> None:
    """A second controller replica stands by; the leader goes; the standby leads and reconciles."""
    plane, port = installed.plane, free_port()
    standby_kubelet = Kubelet(
        plane, installed.controller_kubelet.pod_spec, NAMESPACE, tmp_path, pod_name="multihome-controller-1"
    )
    standby = standby_kubelet.run_pod(rewrite={"--bind": f"127.0.0.1:{port}"}, ports={8080: port})
    try:
        eventually(lambda: standby.ready, 60, "the standby is Ready")

        def holder() -> str:
            return str(plane.get("lease", "multihome-reconciler", "-n", NAMESPACE)["spec"]["holderIdentity"])

        assert holder().startswith("multihome-controller-0_")
        installed.controller.stop()  # the Pod goes: it releases nothing, the Lease expires
        answered = []
        deadline = time.monotonic() + 60
        while not holder().startswith("multihome-controller-1_"):
            assert time.monotonic() < deadline, "the standby never took the Lease"
            status, _ = installed.https_get("/readyz")
            answered.append(status)
            time.sleep(0.5)
        assert set(answered) <= {200}, "admission answered throughout"
        created = create_pod_when_injected(plane, pod(dataplane, name="upf-after", labels={"app": "upf"}))
        assert created["metadata"]["annotations"]["multihome.io/injected-by"] == "dataplane"
        plane.apply(
            policy_manifest(dataplane) | {"metadata": {"name": "after-failover", "namespace": dataplane}}
        )
        # Only a reconciler moves a stored policy to a NAD's new range: the new leader's.
        plane.apply(nad("dp", "kube-system", DATAPLANE % "10.0.9.0/24"))
        eventually(
            lambda: (
                ip_blocks(plane.get("networkpolicy", "after-failover", "-n", dataplane)) == {"10.0.9.0/24"}
            ),
            60,
            "the new leader reconciles",
        )
    finally:
        standby.stop()
        standby_kubelet.cleanup()


# --- the kubelet's rules, which the chart must meet -----------------------------------------


def with_tls_optional(template: Mapping[str, Any], optional: bool) -> dict[str, Any]:
    """The Pod template with its Secret volume's `optional` set."""
    changed = copy.deepcopy(dict(template))
    changed["volumes"] = [
        {**v, "secret": {**v["secret"], "optional": optional}} if "secret" in v else v
        for v in changed["volumes"]
    ]
    return changed


def test_the_kubelet_refuses_a_pod_whose_secret_is_missing(installed: Installed, tmp_path: Path) -> None:
    """The day-one bug as a kubelet reports it: a Pod whose Secret does not exist, and is not optional."""
    controller = installed.controller_kubelet.pod_spec
    strict = with_tls_optional(installed.kubelet.pod_spec, False)
    for template in (strict, {**controller, "volumes": [*controller["volumes"], *strict["volumes"]]}):
        elsewhere = Kubelet(installed.plane, template, "default", tmp_path)
        with pytest.raises(FailedMount, match='volume "tls" : secret "multihome-tls" not found'):
            elsewhere.run_pod()
        assert not (tmp_path / "certificates.log").exists(), "no init container ran before the mounts"
    # As the chart renders it (optional): mounted empty, the files follow once the keys exist.
    empty = Kubelet(installed.plane, installed.kubelet.pod_spec, "default", tmp_path / "optional")
    empty.set_up_volumes()
    assert [p.name for p in empty.volumes["tls"].iterdir() if not p.name.startswith("..")] == []


def test_a_key_named_in_items_must_exist(installed: Installed, tmp_path: Path) -> None:
    template = with_tls_optional(installed.kubelet.pod_spec, False)
    for volume in template["volumes"]:
        if "secret" in volume:
            volume["secret"]["items"] = [{"key": "tls.crt", "path": "tls.crt"}, {"key": "nope", "path": "x"}]
    with pytest.raises(FailedMount, match="references non-existent secret key: nope"):
        Kubelet(installed.plane, template, NAMESPACE, tmp_path).set_up_volumes()


def test_a_renewed_pair_reaches_the_server_through_the_mount(installed: Installed, tmp_path: Path) -> None:
    """The leader's renewal writes the Secret; the kubelet's sync brings the files, the server reloads."""
    secret = installed.secret()
    for name in ("ca.crt", "ca.key"):
        (tmp_path / name).write_bytes(secret[name])
    ensure_certificates(tmp_path, CertificateRequest("multihome", NAMESPACE), force=True)
    renewed = {n: base64.b64encode((tmp_path / n).read_bytes()).decode() for n in ("tls.crt", "tls.key")}
    installed.plane.kubectl(
        "patch", "secret", "multihome-tls", "-n", NAMESPACE, "-p", json.dumps({"data": renewed})
    )
    expected = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes()).serial_number

    def served_serial() -> int:
        context = ssl.create_default_context(cafile=str(installed.ca))
        context.check_hostname = False
        with (
            socket.create_connection(("127.0.0.1", installed.port), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    eventually(lambda: served_serial() == expected, 30, "the renewed certificate is served")
    assert installed.pod.ready


def test_an_audit_without_rights_names_what_it_may_not_list(installed: Installed, tmp_path: Path) -> None:
    """A 403 from the real authorizer: exit 2 and one line with the resource and the verb."""
    plane = installed.plane
    plane.kubectl("create", "serviceaccount", "nobody", "-n", "default")
    config = plane.token_kubeconfig(tmp_path / "kubeconfig", plane.token("default", "nobody"))
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "audit", "--kubeconfig", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: may not list "), line
    assert f"on {plane.url}:" in line
    assert 'User "system:serviceaccount:default:nobody" cannot list resource' in line
