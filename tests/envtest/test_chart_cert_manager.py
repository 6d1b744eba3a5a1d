"""The chart with cert-manager, on a real API server with cert-manager's CRDs applied.

cert-manager itself cannot run here, so the test does its two jobs by hand, the way it
does them: the Secret the Certificate names (type kubernetes.io/tls, the leaf then its CA
in tls.crt, an SEC1 EC key, ca.crt) and the caBundle cainjector copies into the webhook
configurations. The main container then runs as rendered and answers through the API server.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from certs.issue import CertificateRequest, ensure_certificates
from tests.envtest.chart import CHART, CRDS, NAMESPACE, named, render, served_at
from tests.envtest.controlplane import ControlPlane, free_port
from tests.envtest.kubelet import FailedMount, Kubelet
from tests.envtest.test_chart_installed import SERVICE_HOST, VPC_CNI, eventually
from tests.support import nad, namespace

CONTROL_PLANE = {"hosts": {SERVICE_HOST: "127.0.0.1"}}
CERT_MANAGER_CRDS = Path(__file__).parent.parent / "fixtures" / "crds" / "cert-manager.io.yaml"
MONITORING_CRDS = CERT_MANAGER_CRDS.with_name("monitoring.coreos.com.yaml")
VALUES = sorted((CHART / "ci").glob("cert-manager*.yaml"))


def cert_manager_secret(workdir: Path, certificate: dict[str, Any]) -> dict[str, bytes]:
    """The Secret cert-manager writes for `certificate` with a CA issuer."""
    request = CertificateRequest(NAMESPACE, NAMESPACE, tuple(certificate["spec"]["dnsNames"]))
    ensure_certificates(workdir, request)
    key = serialization.load_pem_private_key((workdir / "tls.key").read_bytes(), password=None)
    sec1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    ca = (workdir / "ca.crt").read_bytes()
    return {"tls.crt": (workdir / "tls.crt").read_bytes() + ca, "tls.key": sec1, "ca.crt": ca}


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    control_plane.apply(namespace(NAMESPACE))
    control_plane.kubectl("apply", *[a for crd in [*CRDS, CERT_MANAGER_CRDS] for a in ("-f", str(crd))])
    control_plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    return control_plane


@pytest.mark.parametrize("values", VALUES, ids=[v.name for v in VALUES])
def test_the_rendered_objects_are_accepted(crds: ControlPlane, values: Path) -> None:
    docs = [d for d in render(values) if d["kind"] != "CustomResourceDefinition"]
    assert {"Certificate"} <= {d["kind"] for d in docs}
    done = crds.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=yaml.safe_dump_all(docs)
    )
    assert "certificate.cert-manager.io/multihome created (server dry run)" in done.stdout
    # The schemas are strict enough to fail: a misplaced field is refused.
    _serving(docs)["spec"]["rotationPolicy"] = "Always"
    typo = crds.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(docs),
        check=False,
    )
    assert 'unknown field "spec.rotationPolicy"' in typo.stderr


def test_the_monitoring_objects_are_accepted(crds: ControlPlane) -> None:
    """ServiceMonitor, PrometheusRule and the dashboard ConfigMap, with the operator's CRDs applied."""
    crds.kubectl("apply", "-f", str(MONITORING_CRDS))
    crds.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    docs = [
        d for d in render(CHART / "ci" / "monitoring-values.yaml") if d["kind"] != "CustomResourceDefinition"
    ]
    assert {"ServiceMonitor", "PrometheusRule"} <= {d["kind"] for d in docs}
    done = crds.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=yaml.safe_dump_all(docs)
    )
    assert "servicemonitor.monitoring.coreos.com/multihome created (server dry run)" in done.stdout
    assert "prometheusrule.monitoring.coreos.com/multihome created (server dry run)" in done.stdout
    assert "configmap/multihome-dashboard created (server dry run)" in done.stdout


@pytest.fixture(scope="module")
def served(crds: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The release with cert-manager values, its Secret and caBundle as cert-manager leaves them."""
    if os.geteuid() != 0:
        pytest.fail("the chart tier runs containers as a kubelet does (mount namespaces): run it as root")
    port = free_port()
    docs = served_at(render(VALUES[0]), SERVICE_HOST, port)
    workdir = tmp_path_factory.mktemp("cert-manager")
    secret = cert_manager_secret(workdir / "issued", _serving(docs))
    bundle = base64.b64encode(secret["ca.crt"]).decode()
    for doc in docs:
        for hook in doc.get("webhooks", []) if doc["kind"].endswith("WebhookConfiguration") else []:
            hook["clientConfig"]["caBundle"] = bundle  # cainjector's job
    crds.apply(*[d for d in docs if d["kind"] != "CustomResourceDefinition"])
    template = named(docs, "Deployment", "multihome")["spec"]["template"]["spec"]
    assert "initContainers" not in template, "with cert-manager there is nothing to issue at start"
    kubelet = Kubelet(crds, template, NAMESPACE, workdir / "kubelet")
    # Until cert-manager has issued, the kubelet cannot mount the Secret and the Pod waits.
    with pytest.raises(FailedMount, match='secret "multihome-tls" not found'):
        kubelet.run_pod()
    crds.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "multihome-tls", "namespace": NAMESPACE},
            "data": {k: base64.b64encode(v).decode() for k, v in secret.items()},
        }
    )
    try:
        pod = kubelet.run_pod(rewrite={"--bind": f"127.0.0.1:{port}"}, ports={8443: port})
        try:
            eventually(lambda: pod.ready, 60, "the Pod is Ready by its readiness probe")
            yield crds
        finally:
            pod.stop()
        log = pod.process("webhook").log_path.read_text()
        assert '"level":"error"' not in log, log
    finally:
        kubelet.cleanup()


def _serving(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The serving Certificate (the self-signed setup also renders a CA Certificate)."""
    return next(d for d in docs if d["kind"] == "Certificate" and not d["spec"].get("isCA"))


def test_the_main_container_serves_on_cert_managers_secret(served: ControlPlane) -> None:
    def refused() -> str:
        done = served.kubectl(
            "apply", "-f", "-", stdin=json.dumps(nad("vpc", "kube-system", VPC_CNI)), check=False
        )
        return done.stderr if "denied the request" in done.stderr else ""

    assert "aws-cni" in eventually(refused, 60, "the webhook answers through the API server")
