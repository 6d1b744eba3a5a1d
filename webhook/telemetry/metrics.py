"""Prometheus metrics, correct across gunicorn worker processes.

Under `serve`, PROMETHEUS_MULTIPROC_DIR is set before any worker starts, so each
worker writes its samples to shared files and `/metrics` on any worker reports
the sum over all of them.

A review is counted by `Metrics.review`, which only queues it; the queue is applied
to the counter and histogram every `FLUSH_SECONDS`, when it grows long, and before
every scrape. Each sample written to the shared files takes a process-wide lock,
and the three per review were 6% of an injecting review's cost under load.
A scrape of the worker that answered sees every review; another worker's, at most
`FLUSH_SECONDS` old.
"""

from __future__ import annotations

import os
from collections import Counter as Tally
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from cryptography import x509
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from webhook.decisions.snapshot import SourceStatus
from webhook.telemetry.multiproc import MULTIPROC_ENV
from webhook.telemetry.ticker import Ticker

# Decisions are in-memory: most take well under a millisecond; 3 s is the API server's patience.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 3.0)
FLUSH_SECONDS: Final = 1.0
FLUSH_AT: Final = 1_000  # queued reviews


class Metrics:
    """The webhook's metrics, registered in their own registry (one per app)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reviews = Counter(
            "multihome_admission_reviews",
            "AdmissionReviews answered, by path, operation and decision.",
            ["path", "operation", "decision"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "multihome_admission_decision_seconds",
            "Time to decide an AdmissionReview, from decoded request to encoded response.",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "multihome_http_rejected_requests",
            "Requests answered without a review (400, 413, 415), by path and status code.",
            ["path", "code"],
            registry=self.registry,
        )
        self.handler_errors = Counter(
            "multihome_handler_errors",
            "Handler exceptions turned into denials, by path.",
            ["path"],
            registry=self.registry,
        )
        self.state_objects = Gauge(
            "multihome_state_objects",
            "Objects held in the cluster state, by kind.",
            ["kind"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )

        self.audit_findings = Gauge(
            "multihome_audit_findings",
            "Audit findings in the cluster by check and severity, refreshed by the leader every minute.",
            ["check", "severity"],
            registry=self.registry,
            multiprocess_mode="mostrecent",  # whichever worker led last
        )
        self.audit_runs = Counter(
            "multihome_audit_runs_total",
            "Audits the leader has run (each refreshes multihome_audit_findings and the reports).",
            registry=self.registry,
        )
        self.ec2_calls = Counter(
            "multihome_ec2_calls",
            "EC2 API calls the controller made (after the SDK's retries), by action and outcome "
            "(ok, throttled, refused, error).",
            ["action", "outcome"],
            registry=self.registry,
        )
        self.ec2_last_read = Gauge(
            "multihome_ec2_last_read_timestamp_seconds",
            "When the controller last read EC2's facts whole (Unix time); 0 before the first read.",
            registry=self.registry,
        )
        self.ip_changes = Counter(
            "multihome_ip_addresses",
            "Pods' secondary addresses IP management assigned to or unassigned from ENIs, by change.",
            ["change"],
            registry=self.registry,
        )
        self.ip_pending = Gauge(
            "multihome_ip_pods_pending",
            "Pods whose multihome.io/secondary-ips condition is False after the last pass.",
            registry=self.registry,
        )
        self.leader = Gauge(
            "multihome_reconciler_leader",
            "1 while a worker of this replica holds the reconciler's Lease.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.certificate_expiry = Gauge(
            "multihome_certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (Unix time), as read from --tls-cert.",
            registry=self.registry,
            # Every worker reads the same file; one not scraped yet holds 0, so the largest.
            multiprocess_mode="livemax",
        )
        self._certificate_seen: tuple[float, int] | None = None
        self.report_api = Gauge(
            "multihome_policy_reports_api",
            "1 for the report API the leader writes findings to; every one 0 when the cluster serves none.",
            ["api"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.synced = self._freshness("multihome_state_synced", "1 once the resource has been listed.")
        self.missing = self._freshness(
            "multihome_state_resource_missing",
            "1 while the API server does not serve the resource (CRD not installed).",
        )
        self.relists = self._freshness("multihome_state_relists", "Relists since start (410 Gone, errors).")
        self.watch_errors = self._freshness(
            "multihome_state_watch_errors", "List and watch errors since start."
        )
        self.watching = Gauge(
            "multihome_state_watching",
            "1 while the resource's list or watch works; 0 while answers come from the last state.",
            ["resource"],
            registry=self.registry,
            multiprocess_mode="livemin",  # the most pessimistic worker
        )
        self.event_age = self._freshness(
            "multihome_state_last_event_age_seconds",
            "Seconds since the last event or bookmark: how stale the cache may be.",
        )
        # (path, operation, decision, seconds) of reviews not yet in the counters.
        self._queued: deque[tuple[str, str, str, float]] = deque()
        self._ticker = Ticker(self, Metrics.flush, FLUSH_SECONDS, "metrics-flush")

    def review(self, path: str, operation: str, decision: str, seconds: float) -> None:
        """Count an answered review and how long it took (queued: see the module's docstring)."""
        self._queued.append((path, operation, decision, seconds))
        if len(self._queued) >= FLUSH_AT:
            self.flush()
        else:
            self._ticker.ensure()

    def flush(self) -> None:
        """Apply the queued reviews to the counter and histogram; safe from any thread."""
        counts: Tally[tuple[str, str, str]] = Tally()
        times: dict[str, list[float]] = {}
        queued = self._queued
        while queued:
            try:
                path, operation, decision, seconds = queued.popleft()
            except IndexError:  # another thread flushed the last one
                break
            counts[path, operation, decision] += 1
            times.setdefault(path, []).append(seconds)
        for (path, operation, decision), count in counts.items():
            self.reviews.labels(path=path, operation=operation, decision=decision).inc(count)
        for path, values in times.items():
            histogram = self.latency.labels(path=path)
            for value in values:
                histogram.observe(value)

    def record_audit(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Findings by (check, severity), zero for every check that found nothing."""
        self.audit_runs.inc()
        for (check, severity), count in counts.items():
            self.audit_findings.labels(check=check, severity=severity).set(count)

    def record_certificate(self, path: Path) -> None:
        """Set the expiry gauge from the certificate file, re-read only when it changes."""
        try:
            stat = path.stat()
            if self._certificate_seen == (stat.st_mtime, stat.st_size):
                return
            certificate = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            return  # the server itself reports an unreadable pair
        self.certificate_expiry.set(certificate.not_valid_after_utc.timestamp())
        self._certificate_seen = (stat.st_mtime, stat.st_size)

    def record_report_api(self, served: str | None, candidates: Sequence[str]) -> None:
        """Which report API (group/version) the leader wrote findings to, of the candidates."""
        for candidate in candidates:
            self.report_api.labels(api=candidate).set(1 if candidate == served else 0)

    def _freshness(self, name: str, documentation: str) -> Gauge:
        # The largest over live workers: the most pessimistic view of freshness.
        return Gauge(name, documentation, ["resource"], registry=self.registry, multiprocess_mode="livemax")

    def record_state(self, counts: Mapping[str, int], sources: Sequence[SourceStatus]) -> None:
        """Set the state-size and freshness gauges."""
        for kind, count in counts.items():
            self.state_objects.labels(kind=kind).set(count)
        for source in sources:
            self.synced.labels(resource=source.resource).set(1 if source.synced else 0)
            self.missing.labels(resource=source.resource).set(1 if source.missing else 0)
            self.relists.labels(resource=source.resource).set(source.relists)
            self.watch_errors.labels(resource=source.resource).set(source.errors)
            self.watching.labels(resource=source.resource).set(1 if source.watching else 0)
            if source.last_event_age is not None:
                self.event_age.labels(resource=source.resource).set(source.last_event_age)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type; summed over workers when multiprocess."""
        self.flush()
        directory = os.environ.get(MULTIPROC_ENV)
        if directory and os.path.isdir(directory):
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
