"""`controller`: everything multihome does in the background, apart from admission.

One process per replica, one active replica at a time (the Lease): the reconciler and
its companions, the periodic audit with its gauges and policy reports, AttachmentRule
status and Events, certificate renewal and caBundle sync, and with `--aws` the EC2
checks (MH06x). Admission (`serve`) holds no
write right, no Lease and no CA key; this process has them, and answers only its own
`/healthz`, `/readyz` and `/metrics` on a port of its own (plain HTTP: nothing but
probes and Prometheus talks to it, and it serves no admission).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from certs.issue import CertificateRequest
from certs.sync import sync_certificates
from policies.audit import audit, audit_gauges
from policies.controllers.aws import AwsWatch
from policies.controllers.events import EventRecorder
from policies.controllers.ip_manager import IpManager
from policies.controllers.policy_reports import REPORT_APIS, sync_policy_reports
from policies.controllers.reconcile import Reconciler
from policies.controllers.rule_status import sync_rule_status
from policies.controllers.settings import ControllerSettings
from webhook.aws.ec2 import Ec2Reader, ec2_client
from webhook.cluster.kube import KubeApi
from webhook.cluster.lease import LeaderLoop, LeaseElector
from webhook.cluster.live import LiveState
from webhook.telemetry.memory import release_memory
from webhook.telemetry.metrics import Metrics

log = logging.getLogger("multihome.controller")
# The audit loop looks every AUDIT_TICK seconds; a change is audited once it is AUDIT_SETTLE old.
AUDIT_TICK = 5.0
AUDIT_SETTLE = 15.0


@dataclass
class Controller:
    """The background work of one replica, started and stopped as one."""

    settings: ControllerSettings
    api: KubeApi
    live: LiveState
    metrics: Metrics
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}_{os.getpid()}")
    _stoppers: list[Callable[[], None]] = field(default_factory=list)
    # (when, state generation, AWS findings' generation) of the last audit.
    _audited: tuple[float, int, int] = (float("-inf"), -1, -1)
    aws: AwsWatch | None = None
    ip: IpManager | None = None
    # (when, state generation) of the last IP management pass.
    _ip_passed: tuple[float, int] = (float("-inf"), -1)

    def start(self) -> Controller:
        """Campaign for the Lease; what only the leader does runs while it leads."""
        settings, metrics = self.settings, self.metrics
        metrics.leader.set(0)
        elector = LeaseElector(
            self.api,
            settings.lease_namespace,
            settings.lease_name,
            self.identity,
            on_change=lambda leader: metrics.leader.set(1 if leader else 0),
        ).start()
        self.elector = elector
        self._stoppers.append(elector.stop)
        leading = lambda: elector.is_leader  # noqa: E731 - read at each call
        events = EventRecorder(self.api, self.identity)
        if settings.reconcile:
            reconciler = Reconciler(
                self.live, self.api, dry_run=settings.dry_run, is_leader=leading, events=events
            )
            self.live.add_listener(reconciler.changed.set)
            self._stoppers.append(reconciler.start().stop)
        if settings.aws:
            self.aws = AwsWatch(self.api, self.live, self._ec2_reader, metrics, events)
            self._loop(
                "aws",
                lambda: self.aws.refresh() if self.aws and self.live.ready() else None,
                leading,
                interval=settings.aws_interval,
                first_after=10.0,
            )
        if settings.ip_management:
            self.ip = IpManager(
                self.api,
                self.live,
                Ec2Reader(ec2_client(), ttl=0, observe=self._observe_ec2),
                is_leader=leading,
            )
            # Soon after Pods change, and a full pass every ip_sweep_interval regardless.
            self._loop("ip-management", self._ip_pass, leading, interval=2.0, first_after=5.0)
        # Findings as gauges and policy reports: soon after leading, within AUDIT_SETTLE seconds of
        # a change, and every audit_interval seconds regardless (Pods' churn alone changes nothing).
        self._loop("audit", self._refresh_audit, leading, interval=AUDIT_TICK, first_after=5.0)
        # Often enough that `kubectl get attachmentrules` answers within seconds of a change.
        self._loop(
            "rule-status",
            lambda: sync_rule_status(self.api, self.live, events=events) if self.live.ready() else None,
            leading,
            interval=10.0,
            first_after=2.0,
        )
        if settings.cert_secret:
            namespace, _, name = settings.cert_secret.partition("/")
            request = CertificateRequest(settings.cert_service, settings.lease_namespace)
            # Soon after taking the lead, then twice a day: renewal starts 30 days before expiry.
            self._loop(
                "certificates",
                lambda: sync_certificates(
                    self.api, request, namespace, name, settings.webhook_configuration or None
                ),
                leading,
                interval=12 * 3600.0,
                first_after=30.0,
            )
        return self

    def stop(self) -> None:
        for stop in reversed(self._stoppers):
            stop()

    def _loop(
        self,
        name: str,
        action: Callable[[], object],
        leading: Callable[[], bool],
        *,
        interval: float,
        first_after: float,
    ) -> None:
        loop = LeaderLoop(name, action, is_leader=leading, interval=interval, first_after=first_after).start()
        self._stoppers.append(loop.stop)

    def _observe_ec2(self, action: str, outcome: str) -> None:
        self.metrics.ec2_calls.labels(action=action, outcome=outcome).inc()

    def _ec2_reader(self) -> Ec2Reader:
        # Facts a little younger than the interval, so each pass reads EC2 once.
        return Ec2Reader(ec2_client(), ttl=self.settings.aws_interval * 0.9, observe=self._observe_ec2)

    def _ip_pass(self) -> None:
        if self.ip is None or not self.live.ready():
            return
        now, generation = time.monotonic(), self.live.generation()
        last_at, last_generation = self._ip_passed
        if generation == last_generation and now - last_at < self.settings.ip_sweep_interval:
            return
        self._ip_passed = (now, generation)
        report = self.ip.run_once()
        self.metrics.ip_changes.labels(change="assigned").inc(report.assigned)
        self.metrics.ip_changes.labels(change="unassigned").inc(report.unassigned)
        self.metrics.ip_pending.set(sum(1 for v in report.verdicts.values() if not v.ready))
        for error in report.errors:
            log.warning("IP management", extra={"error": error})

    def _refresh_audit(self) -> None:
        if not self.live.ready():
            return
        now, generation = time.monotonic(), self.live.generation()
        aws_generation = self.aws.generation if self.aws else 0
        last_at, last_generation, last_aws = self._audited
        due = now - last_at >= self.settings.audit_interval
        changed = (generation, aws_generation) != (
            last_generation,
            last_aws,
        ) and now - last_at >= AUDIT_SETTLE
        if not (due or changed):
            return
        self._audited = (now, generation, aws_generation)
        findings = audit(self.live, more=self.aws.findings if self.aws else ())
        release_memory()
        self.metrics.record_audit(audit_gauges(findings))
        if not self.settings.dry_run:
            served = sync_policy_reports(self.api, findings).api
            self.metrics.record_report_api(
                served.api_version if served else None, [r.api_version for r in REPORT_APIS]
            )


class HealthServer(ThreadingHTTPServer):
    """`/healthz`, `/readyz` and `/metrics` of the controller."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], controller: Controller) -> None:
        self.controller = controller
        super().__init__(address, _HealthHandler)


class _HealthHandler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:
        controller = self.server.controller
        if self.path == "/healthz":
            self._json(200, {"status": "ok"})
        elif self.path == "/readyz":
            live = controller.live
            leader = bool(getattr(controller, "elector", None) and controller.elector.is_leader)
            if live.ready():
                ready: dict[str, Any] = {"status": "ready", "leader": leader}
                if controller.aws is not None:
                    ready["aws"] = controller.aws.status()  # EC2 failing never makes it unready
                self._json(200, ready)
            else:
                self._json(
                    503,
                    {"status": "not ready", "reason": "cluster state has not synced yet", "leader": leader},
                )
        elif self.path == "/metrics":
            controller.metrics.record_state(controller.live.counts(), controller.live.sources())
            body, content_type = controller.metrics.exposition()
            self._send(200, body, content_type)
        else:
            self._json(
                404, {"error": "Not Found", "reason": f"no {self.path} here: /healthz, /readyz, /metrics"}
            )

    def _json(self, code: int, payload: dict[str, Any]) -> None:
        self._send(code, json.dumps(payload).encode(), "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # probes every few seconds: nothing worth a line


def run_controller(settings: ControllerSettings, api: KubeApi, live: LiveState) -> int:
    """Run until SIGTERM or SIGINT: watches, the Lease, the background work and the health port."""
    metrics = Metrics()
    host, _, port = settings.bind.rpartition(":")
    live.start()
    controller = Controller(settings, api, live, metrics).start()
    server = HealthServer((host, int(port)), controller)
    stopping = threading.Event()

    def stop(_signal: int, _frame: object) -> None:
        stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("controller started", extra={"bind": settings.bind, "identity": controller.identity})
    server.serve_forever(poll_interval=0.5)
    controller.stop()
    live.stop(timeout=2.0)
    server.server_close()
    log.info("controller stopped", extra={"identity": controller.identity})
    return 0
