"""Self-managed certificates in a cluster: the pair lives in a Secret, the CA in the caBundles.

`sync_certificates` keeps a Secret (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`) holding a
valid CA and serving pair, issuing or renewing through `ensure_certificates`, and
writes the CA into the caBundle of every webhook of the named Mutating and
Validating webhook configurations. Replicas mount the Secret; the kubelet updates
the files and the server reloads them without a restart. Run by an init container
before the server starts, and by the leader on a schedule.
"""

from __future__ import annotations

import base64
import copy
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jsonpatch

from certs.issue import (
    CA_CERT,
    CA_KEY,
    TLS_CERT,
    TLS_KEY,
    CertificateRequest,
    CertificateResult,
    ensure_certificates,
)
from webhook.cluster.kube import ApiError, KubeApi

log = logging.getLogger("multihome.certs")

FILES: Final = (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY)
# A conflicting write is retried this many times, each time from a fresh read.
CONFLICT_RETRIES: Final = 3
WEBHOOK_KINDS: Final = ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")


@dataclass(frozen=True)
class SyncResult:
    """What a sync did."""

    certificate: CertificateResult
    secret_written: bool
    webhooks_patched: int


def secret_path(namespace: str, name: str = "") -> str:
    base = f"/api/v1/namespaces/{namespace}/secrets"
    return f"{base}/{name}" if name else base


def webhook_configuration_path(kind: str, name: str) -> str:
    return f"/apis/admissionregistration.k8s.io/v1/{kind}/{name}"


def sync_certificates(
    api: KubeApi,
    request: CertificateRequest,
    secret_namespace: str,
    secret_name: str,
    webhook_configuration: str | None,
) -> SyncResult:
    """Ensure the Secret holds a valid pair and the webhook configurations trust its CA.

    Replicas starting together race to fill the Secret: the write carries the
    resourceVersion it read, so one wins and the others read again and keep its pair.
    """
    for attempt in range(CONFLICT_RETRIES):
        try:
            result, files, written = _sync_secret(api, request, secret_namespace, secret_name)
            break
        except ApiError as err:
            if err.status != 409 or attempt == CONFLICT_RETRIES - 1:
                raise
            log.info("certificate secret changed meanwhile; reading it again", extra={"secret": secret_name})
    patched = 0
    if webhook_configuration:
        patched = patch_ca_bundles(api, webhook_configuration, files[CA_CERT])
    return SyncResult(result, written, patched)


def _sync_secret(
    api: KubeApi, request: CertificateRequest, secret_namespace: str, secret_name: str
) -> tuple[CertificateResult, dict[str, str], bool]:
    current = api.get(secret_path(secret_namespace, secret_name), timeout=5)
    with tempfile.TemporaryDirectory(prefix="multihome-certs-") as directory:
        work = Path(directory)
        for name, data in ((current or {}).get("data") or {}).items():
            if name in FILES and isinstance(data, str):
                (work / name).write_bytes(base64.b64decode(data))
        result = ensure_certificates(work, request)
        files = {name: base64.b64encode((work / name).read_bytes()).decode() for name in FILES}
    if current is not None and (current.get("data") or {}) == files:
        return result, files, False
    # An existing Secret keeps its type (immutable) and the metadata others gave it: the chart
    # renders it empty, and Helm's ownership annotations must survive the write.
    body: dict[str, Any] = (
        copy.deepcopy(current)
        if current is not None
        else {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": secret_name,
                "namespace": secret_namespace,
                "labels": {"app.kubernetes.io/managed-by": "multihome"},
            },
        }
    )
    body["data"] = files
    if current is None:
        api.write("POST", secret_path(secret_namespace), body)
    else:
        api.write("PUT", secret_path(secret_namespace, secret_name), body)
    log.info(
        "certificate secret written",
        extra={"secret": f"{secret_namespace}/{secret_name}", "reason": result.reason},
    )
    return result, files, True


def patch_ca_bundles(api: KubeApi, name: str, ca_bundle: str) -> int:
    """Write `ca_bundle` into every webhook of the named configurations; returns how many changed."""
    changed = 0
    for kind in WEBHOOK_KINDS:
        path = webhook_configuration_path(kind, name)
        configuration = api.get(path, timeout=5)
        if configuration is None:
            continue
        updated = copy.deepcopy(configuration)
        for webhook in updated.get("webhooks") or []:
            client = webhook.setdefault("clientConfig", {})
            if client.get("caBundle") != ca_bundle:
                client["caBundle"] = ca_bundle
                changed += 1
        operations = jsonpatch.make_patch(configuration, updated).patch
        if operations:
            # The test op makes a concurrent change fail instead of being overwritten.
            version = (configuration.get("metadata") or {}).get("resourceVersion")
            guard = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}] if version else []
            try:
                api.write("PATCH", path, guard + operations, content_type="application/json-patch+json")
            except ApiError as err:
                log.warning(
                    "caBundle not patched; next sync retries",
                    extra={"configuration": path, "error": str(err)},
                )
                changed = 0
    return changed
