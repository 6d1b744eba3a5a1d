"""`serve`: the HTTPS admission webhook, on file state or the live cluster.

Imported after `prepare_metrics_directory()`: the server imports prometheus_client,
which picks per-process metric files at import when the directory is exported.
"""

from __future__ import annotations

import argparse
import gc
import logging.config
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from webhook.cli.common import UsageError
from webhook.cli.parser import settings_from
from webhook.cluster.authorizer import SubjectAccessReviewer
from webhook.cluster.files import FileState
from webhook.cluster.kube import Endpoint, HttpKubeApi
from webhook.cluster.live import LiveState
from webhook.decisions.label_rights import Authorizer
from webhook.decisions.snapshot import ClusterState
from webhook.server.app import Handler, create_app
from webhook.server.gunicorn import WebhookServer
from webhook.server.settings import ServeSettings
from webhook.telemetry.logs import lean_records, logging_config


def run(args: argparse.Namespace) -> int:
    """`serve` as the command line asks."""
    return serve(settings_from(args))


def serve(settings: ServeSettings, routes: Callable[[], Mapping[str, Handler]] | None = None) -> int:
    """`serve`: the webhook of `settings` until it is stopped.

    `routes` builds other routes than DESIGN.md's (the benchmarks' diagnostics). The
    caller has exported the metrics directory (`prepare_metrics_directory`) first.
    """
    if settings.tls_cert is None or settings.tls_key is None:
        raise UsageError(
            "--tls-cert and --tls-key are required: the webhook serves HTTPS only "
            "(issue a pair with: multihome certs --out DIR)"
        )
    logging.config.dictConfig(logging_config(settings.log_level))
    lean_records()

    state, start, authorizer = _state_for(settings)
    app = create_app(settings, state, routes=routes() if routes is not None else None, authorizer=authorizer)
    logging.getLogger("multihome.server").info(
        "serving", extra={"bind": settings.bind, "state": str(settings.state_dir), **state.counts()}
    )
    _wait_for_certificate(settings.tls_cert, settings.tls_key)
    # What the master built (a file state, the app, every module) is shared with the
    # workers copy-on-write: frozen, the collector neither walks it in each worker nor
    # writes to its pages, which would copy them into every worker.
    gc.freeze()
    # Each worker watches the API server itself, after the fork: threads do not survive one.
    WebhookServer(settings, lambda: app, on_worker_start=start).run()
    return 0


def _wait_for_certificate(
    cert: Path, key: Path, *, timeout: float | None = None, every: float = 10.0
) -> None:
    """Wait for the serving pair a Secret volume fills in later; a path that cannot fill, fail at once.

    A kubelet mounts the certificate Secret before the Secret has its keys (the chart renders
    it empty for the init container to fill, cert-manager issues after the Pod starts) and
    writes the files on its next sync, up to a minute or two later. That is worth waiting
    for, saying so every `every` seconds; the startup probe bounds the wait. A file missing
    from a directory that is no volume (a mistyped `--tls-cert`) will never appear.
    """
    log = logging.getLogger("multihome.server")
    deadline = None if timeout is None else time.monotonic() + timeout
    said = -every
    while missing := [p for p in (cert, key) if not _has_content(p)]:
        for path in missing:
            if not _may_fill_later(path.parent):
                present = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
                there = (
                    f"{path.parent} holds {', '.join(present)}"
                    if present
                    else f"{path.parent} does not exist"
                )
                flag = "--tls-cert" if path == cert else "--tls-key"
                raise UsageError(f"{flag} {path} does not exist ({there})")
        if time.monotonic() - said >= every:
            log.warning(
                "waiting for the certificate files to appear in their volume",
                extra={"missing": [str(p) for p in missing], "cert": str(cert), "key": str(key)},
            )
            said = time.monotonic()
        if deadline is not None and time.monotonic() > deadline:
            raise UsageError(
                f"{' and '.join(map(str, missing))} did not appear within {timeout:.0f} s; "
                "issue a pair with: multihome certs --out DIR"
            )
        time.sleep(0.5)


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _may_fill_later(directory: Path, settled: float = 5.0) -> bool:
    """Whether files may still appear in `directory`.

    A Kubernetes volume (the kubelet's `..data` link) or an empty mount point fills in
    later, and so may a folder written to in the last `settled` seconds (a pair being
    written); a folder of files that has not changed since holds what it will hold.
    """
    try:
        entries = list(directory.iterdir())
        if not entries or (directory / "..data").exists():
            return True
        newest = max(entry.stat().st_mtime for entry in entries)
    except OSError:
        return False
    return time.time() - newest < settled


def _state_for(
    settings: ServeSettings,
) -> tuple[ClusterState, Callable[[], object] | None, Authorizer | None]:
    """File state from --state, else live state (and its authorizer) from the cluster kubectl would use.

    Admission watches what decisions read and nothing else: no NetworkPolicies (the
    controller's), no Lease, no writes.
    """

    if settings.state_dir is not None:
        return FileState.from_directory(settings.state_dir), None, None

    endpoint = Endpoint.load(settings.kubeconfig, settings.kube_context or None)
    live = LiveState(HttpKubeApi(endpoint), network_policies=False)
    # Inside the API server's 3 s admission timeout, with room for the rest of the review.
    authorizer = SubjectAccessReviewer(HttpKubeApi(endpoint, connect_timeout=1.0, read_timeout=1.5))
    return live, live.start, authorizer
