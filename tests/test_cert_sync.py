"""Self-managed certificates in a cluster: the Secret and the caBundles, against the test API server."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certs.issue import CertificateRequest
from certs.sync import patch_ca_bundles, sync_certificates
from tests.fake_apiserver import FakeApiServer
from webhook.cli.main import main
from webhook.cluster.kube import Endpoint, HttpKubeApi

SECRETS = "/api/v1/secrets"
MUTATING = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
VALIDATING = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
REQUEST = CertificateRequest("multihome", "multihome")


def configuration(kind: str, *webhooks: str) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "multihome"},
        "webhooks": [
            {
                "name": w,
                "clientConfig": {"service": {"name": "multihome", "namespace": "multihome", "path": "/x"}},
            }
            for w in webhooks
        ],
    }


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeApiServer, HttpKubeApi, Path]]:
    server = FakeApiServer()
    server.put(
        MUTATING, configuration("MutatingWebhookConfiguration", "inject.multihome.io", "enrich.multihome.io")
    )
    server.put(VALIDATING, configuration("ValidatingWebhookConfiguration", "pods.multihome.io"))
    port = server.serve()
    kubeconfig = server.kubeconfig(tmp_path, port)
    yield server, HttpKubeApi(Endpoint.load(kubeconfig)), kubeconfig
    server.close()


def _secret(server: FakeApiServer) -> dict[str, str]:
    return dict(server.collections[SECRETS].objects[("multihome", "multihome-tls")]["data"])


def _bundles(server: FakeApiServer) -> set[str]:
    return {
        webhook["clientConfig"].get("caBundle", "")
        for path in (MUTATING, VALIDATING)
        for webhook in server.collections[path].objects[("", "multihome")]["webhooks"]
    }


def test_the_secret_is_created_and_every_webhook_trusts_its_ca(
    api: tuple[FakeApiServer, HttpKubeApi, Path],
) -> None:
    server, client, _ = api
    result = sync_certificates(client, REQUEST, "multihome", "multihome-tls", "multihome")
    assert result.certificate.issued and result.secret_written and result.webhooks_patched == 3
    data = _secret(server)
    assert set(data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert _bundles(server) == {data["ca.crt"]}
    cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(base64.b64decode(data["ca.crt"])))
    again = sync_certificates(client, REQUEST, "multihome", "multihome-tls", "multihome")
    assert not again.certificate.issued and not again.secret_written and again.webhooks_patched == 0


def test_a_broken_pair_is_reissued_under_the_same_ca(api: tuple[FakeApiServer, HttpKubeApi, Path]) -> None:
    server, client, _ = api
    sync_certificates(client, REQUEST, "multihome", "multihome-tls", "multihome")
    before = _secret(server)
    secret = dict(server.collections[SECRETS].objects[("multihome", "multihome-tls")])
    secret["data"] = {**before, "tls.key": base64.b64encode(b"garbage").decode()}
    server.put(SECRETS, secret)
    result = sync_certificates(client, REQUEST, "multihome", "multihome-tls", "multihome")
    assert result.certificate.issued and result.secret_written
    after = _secret(server)
    assert after["ca.crt"] == before["ca.crt"] and after["tls.key"] != before["tls.key"]
    assert result.webhooks_patched == 0, "the CA did not change, so neither do the caBundles"


def test_a_concurrent_change_to_a_configuration_is_not_overwritten(
    api: tuple[FakeApiServer, HttpKubeApi, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, client, _ = api
    original = client.get
    stale = client.get(f"{MUTATING}/multihome", timeout=1)
    server.put(
        MUTATING, configuration("MutatingWebhookConfiguration", "inject.multihome.io")
    )  # someone else's edit

    def get(path: str, *, timeout: float) -> dict[str, Any] | None:
        return (
            stale
            if path.endswith("mutatingwebhookconfigurations/multihome")
            else original(path, timeout=timeout)
        )

    monkeypatch.setattr(client, "get", get)
    patch_ca_bundles(client, "multihome", "Q0E=")
    webhooks = server.collections[MUTATING].objects[("", "multihome")]["webhooks"]
    assert [w["name"] for w in webhooks] == ["inject.multihome.io"]
    assert "caBundle" not in webhooks[0]["clientConfig"]


def test_the_certs_command_in_a_cluster(
    api: tuple[FakeApiServer, HttpKubeApi, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, _, kubeconfig = api
    args = [
        "certs",
        "--service",
        "multihome",
        "--namespace",
        "multihome",
        "--secret",
        "multihome/multihome-tls",
        "--patch-webhooks",
        "--kubeconfig",
        str(kubeconfig),
    ]
    assert main(args) == 0
    assert "3 caBundles updated" in capsys.readouterr().out
    assert _bundles(server) == {_secret(server)["ca.crt"]}
    assert main([*args[:5], "--secret", "nonsense", "--kubeconfig", str(kubeconfig)]) == 2
    assert "is not NAMESPACE/NAME" in capsys.readouterr().err
