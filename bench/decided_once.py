"""multihome with each endpoint's decision made once: what the stack around the decisions costs.

`python -m bench.decided_once` takes `serve`'s arguments and runs `serve`, with one
difference: each endpoint decides the first review it gets, and answers every later
one with that same decision (the same object, so its patch is encoded once). The
rest is multihome's own: the worker and TLS, the body checks, decoding, the
response, the review line (sampled the same way), the metrics. `bench.hotpath` runs
it between the bare floor and multihome, so that the gap from the floor is the
stack around the decisions, and the gap to multihome is the decisions.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from webhook.admission.review import AdmissionRequest, Decision
    from webhook.decisions.policy import AdmissionPolicy
    from webhook.decisions.snapshot import ClusterState
    from webhook.server.app import Handler


class DecidedOnce:
    """A handler that decides the first review it gets and answers every later one the same."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.decision: Decision | None = None
        self._lock = threading.Lock()

    def __call__(self, request: AdmissionRequest, state: ClusterState, policy: AdmissionPolicy) -> Decision:
        if self.decision is None:
            with self._lock:
                if self.decision is None:
                    self.decision = self.handler(request, state, policy)
        return self.decision


def main(argv: Sequence[str] | None = None) -> int:
    from webhook.cli.parser import build_parser, settings_from  # noqa: PLC0415
    from webhook.telemetry.multiproc import prepare_metrics_directory  # noqa: PLC0415

    prepare_metrics_directory()  # before the server imports prometheus_client
    from webhook.cli.serve import serve  # noqa: PLC0415

    args = build_parser("python -m bench.decided_once").parse_args(
        ["serve", *(sys.argv[1:] if argv is None else argv)]
    )

    def routes() -> Mapping[str, Handler]:
        from webhook.server.app import default_routes  # noqa: PLC0415 - after serve has set up metrics

        return {path: DecidedOnce(handler) for path, handler in default_routes().items()}

    return serve(settings_from(args), routes)


if __name__ == "__main__":
    sys.exit(main())
