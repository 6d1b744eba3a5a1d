"""The real server: gunicorn over TLS with certificates from `certs`, spoken to as the API server would."""

from __future__ import annotations

import base64
import json
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.server import Server, client_context, issue_certificates, running_server
from tests.support import CLUSTER, make_request, make_review, nad, pod

NETWORKS = "k8s.v1.cni.cncf.io/networks"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("server"), CLUSTER) as running:
        yield running


def test_health_and_readiness(server: Server) -> None:
    assert server.get("/healthz") == (200, b'{"status":"ok"}\n')
    status, body = server.get("/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"


def test_injection_over_tls(server: Server) -> None:
    request = make_request(pod(labels={"app": "upf"}))
    conn = server.connect()
    status, review = server.post(conn, "/mutate/pods", make_review(request))
    conn.close()
    assert status == 200
    response = review["response"]
    assert response["uid"] == request["uid"]
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    assert patch[0]["value"][NETWORKS] == "kube-system/dp@net1,kube-system/signal"


def test_denials_over_tls(server: Server) -> None:
    conn = server.connect()
    cases = [
        (
            "/validate/networkattachmentdefinitions",
            make_request(nad("vpc", "kube-system", '{"type": "aws-cni"}')),
            "Amazon VPC CNI",
        ),
        ("/validate/pods", make_request(pod(annotations={NETWORKS: "a/b/c"})), 'more than one "/"'),
        (
            "/validate/namespaces",
            make_request(
                {"kind": "Namespace", "metadata": {"name": "x", "labels": {"multihome.io/profile": "p"}}},
                kind="Namespace",
                operation="UPDATE",
                old={"kind": "Namespace", "metadata": {"name": "x"}},
            ),
            "bind the ClusterRole multihome-label-admin",
        ),
    ]
    for path, request, says in cases:
        status, review = server.post(conn, path, make_review(request))
        assert status == 200
        assert review["response"]["uid"] == request["uid"]
        assert review["response"]["allowed"] is False
        assert says in review["response"]["status"]["message"]
    conn.close()


def test_keep_alive_serves_many_reviews_on_one_connection(server: Server) -> None:
    conn = server.connect()
    server.post(conn, "/validate/pods", make_review(make_request(pod())))
    first_socket = conn.sock
    for _ in range(50):
        request = make_request(pod())
        status, review = server.post(conn, "/validate/pods", make_review(request))
        assert status == 200 and review["response"]["uid"] == request["uid"]
    assert conn.sock is first_socket, "the server closed a keep-alive connection"
    conn.close()


def test_concurrent_clients_each_get_their_own_uid(server: Server) -> None:
    def client(_: int) -> list[bool]:
        conn = server.connect()
        results = []
        for _ in range(20):
            request = make_request(pod(labels={"app": "upf"}))
            status, review = server.post(conn, "/mutate/pods", make_review(request))
            results.append(status == 200 and review["response"]["uid"] == request["uid"])
        conn.close()
        return results

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = [ok for batch in pool.map(client, range(12)) for ok in batch]
    assert len(outcomes) == 240 and all(outcomes)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (
            b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}',
            "application/json",
            400,
        ),
        (b"{}", "application/x-www-form-urlencoded", 415),
        (b"x" * (4 * 1024 * 1024 + 1), "application/json", 413),
        (b"[" * 200_000, "application/json", 400),
    ],
)
def test_bad_requests_get_json_errors_over_tls(
    server: Server, body: bytes, content_type: str, status: int
) -> None:
    conn = server.connect()
    got, payload = server.post(conn, "/validate/pods", body, content_type)
    conn.close()
    assert got == status
    assert payload["reason"]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_below_1_2_is_refused(server: Server) -> None:
    old = client_context(server.ca, maximum=ssl.TLSVersion.TLSv1_1)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        pytest.raises(ssl.SSLError, match=r"(?i)protocol.version|unsupported.protocol"),
    ):
        old.wrap_socket(raw, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        modern = client_context(server.ca, maximum=ssl.TLSVersion.TLSv1_2)
        with modern.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.2"
            cipher = tls.cipher()
            assert cipher is not None
            assert cipher[0].startswith("ECDHE-")


def test_metrics_count_reviews_across_workers(server: Server) -> None:
    def total() -> float:
        _, body = server.get("/metrics")
        lines = [
            line
            for line in body.decode().splitlines()
            if line.startswith("multihome_admission_reviews_total{")
            and 'path="/validate/attachmentrules"' in line
        ]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    before = total()
    rule = {
        "apiVersion": "multihome.io/v1alpha1",
        "kind": "AttachmentRule",
        "metadata": {"name": "r"},
        "spec": {"namespaceSelector": {}, "networks": [{"name": "dp", "namespace": "kube-system"}]},
    }
    for _ in range(10):
        conn = server.connect()  # new connections spread over both workers
        server.post(conn, "/validate/attachmentrules", make_review(make_request(rule)))
        conn.close()
    # The worker that answers a scrape counts its own reviews at once, the other's within
    # a second (webhook/telemetry/metrics.py); every one of the ten shows up.
    deadline = time.monotonic() + 10
    while total() - before < 10 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert total() - before == 10


def test_logs_are_json_lines_without_object_bodies(server: Server) -> None:
    request = make_request(pod(labels={"app": "upf"}, annotations={"secret-ish": "do-not-log-me"}))
    conn = server.connect()
    server.post(conn, "/mutate/pods", make_review(request))
    conn.close()
    deadline = time.monotonic() + 10  # lines are written in batches, a tenth of a second apart
    while request["uid"] not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = [json.loads(line) for line in server.log_lines()]
    mine = [e for e in entries if e.get("uid") == request["uid"]]
    assert len(mine) == 1
    assert mine[0]["message"] == "review" and mine[0]["decision"] == "patched" and mine[0]["kind"] == "Pod"
    assert "do-not-log-me" not in server.log.read_text()


def test_certificate_rotation_on_disk_fails_no_request(tmp_path: Path) -> None:
    with running_server(tmp_path, CLUSTER) as server:
        first = _peer_certificate(server)
        failures: list[str] = []
        sent = 0
        stop = threading.Event()

        def traffic() -> None:
            nonlocal sent
            while not stop.is_set():
                try:
                    conn = server.connect()  # a new handshake each time sees the current certificate
                    request = make_request(pod())
                    status, review = server.post(conn, "/validate/pods", make_review(request))
                    conn.close()
                    if status != 200 or review["response"]["uid"] != request["uid"]:
                        failures.append(f"status {status}")
                except Exception as err:
                    failures.append(repr(err))
                sent += 1

        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        issue_certificates(server.certs, "--force")
        deadline = time.monotonic() + 10
        while _peer_certificate(server) == first and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        assert _peer_certificate(server) != first, "the new certificate was not picked up"
        assert sent > 20
        assert failures == []


def _peer_certificate(server: Server) -> bytes:
    conn = server.connect()
    conn.connect()
    der = conn.sock.getpeercert(binary_form=True)
    conn.close()
    assert der is not None
    return der


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    with running_server(tmp_path, CLUSTER, workers=1) as server:
        conn = server.connect()
        assert server.post(conn, "/validate/pods", make_review(make_request(pod())))[0] == 200
        conn.close()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
