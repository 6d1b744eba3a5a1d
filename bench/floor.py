"""The floor for the load benchmark: multihome's server stack with one route that always allows.

Same gunicorn configuration, TLS context, Flask app, body checks, review decoding,
metrics and logging as `serve`; the only difference is the decision, so the ratio
of multihome's throughput to this one is the cost of the decisions themselves.

`/floor-patch` allows with a constant patch, the two annotations an injection
writes: what the API server does with a mutated Pod, without multihome's decision.
"""

from __future__ import annotations

import argparse
import logging.config
from pathlib import Path

from webhook.telemetry.logs import logging_config
from webhook.telemetry.multiproc import prepare_metrics_directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--tls-cert", required=True, type=Path)
    parser.add_argument("--tls-key", required=True, type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    logging.config.dictConfig(logging_config(args.log_level))
    prepare_metrics_directory()
    from webhook.admission.review import AdmissionRequest, Decision, allowed, annotations_patch  # noqa: PLC0415
    from webhook.cluster.files import FileState  # noqa: PLC0415
    from webhook.decisions.policy import AdmissionPolicy  # noqa: PLC0415
    from webhook.decisions.snapshot import ClusterState  # noqa: PLC0415
    from webhook.multus.annotations import INJECTED_BY, NETWORKS  # noqa: PLC0415
    from webhook.server.app import create_app  # noqa: PLC0415 - after the metrics directory is set
    from webhook.server.gunicorn import WebhookServer  # noqa: PLC0415
    from webhook.server.settings import ServeSettings  # noqa: PLC0415

    def always_allow(request: AdmissionRequest, state: ClusterState, policy: AdmissionPolicy) -> Decision:
        return allowed()

    def always_patch(request: AdmissionRequest, state: ClusterState, policy: AdmissionPolicy) -> Decision:
        changes = {NETWORKS: "kube-system/dp", INJECTED_BY: "dataplane"}
        return annotations_patch(request.get("object") or {}, changes)

    settings = ServeSettings(
        bind=args.bind,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        workers=args.workers,
        threads=args.threads,
        log_level=args.log_level,
    )
    app = create_app(settings, FileState([]), routes={"/floor": always_allow, "/floor-patch": always_patch})
    WebhookServer(settings, lambda: app).run()


if __name__ == "__main__":
    main()
