"""`controller --aws`: the MH06x checks every few minutes, kept with their age, never in the way.

The leader reads the Nodes and Pods from the API server and EC2's facts for their
instances, and keeps the findings: the audit joins them to the others (PolicyReports,
the findings gauges), a new finding becomes a Warning Event on the Node or Pod it is
about, and `/readyz` says how old the facts are. When EC2 cannot be read the last
findings stay, with their age and the reason, and nothing else waits on EC2.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from policies.audit import Finding
from policies.aws import OnEc2, aws_findings
from policies.controllers.events import EventRecorder
from webhook.aws.ec2 import Ec2Reader, Ec2Unavailable
from webhook.cluster.kube import ApiError, KubeApi
from webhook.decisions.checks import CHECKS
from webhook.decisions.snapshot import ClusterState
from webhook.telemetry.metrics import Metrics

log = logging.getLogger("multihome.aws")


class AwsWatch:
    """The last MH06x findings, when they were read, and why the last read failed if it did."""

    def __init__(
        self,
        api: KubeApi,
        state: ClusterState,
        reader: Callable[[], Ec2Reader],
        metrics: Metrics,
        events: EventRecorder | None = None,
    ) -> None:
        self.api, self.state, self.metrics, self.events = api, state, metrics, events
        self._new_reader = reader
        self._reader: Ec2Reader | None = None  # made at the first read: a missing region is a read error
        self.findings: list[Finding] = []
        self.generation = 0  # changes whenever the findings do
        self.read_at: float | None = None  # time.time() of the last whole read
        self.error = ""
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Read the cluster and EC2 once; on failure keep the last findings and say why."""
        try:
            if self._reader is None:
                self._reader = self._new_reader()
            cluster = OnEc2.from_api(self.api)
            facts = self._reader.facts(cluster.nodes.values())
        except (Ec2Unavailable, ApiError) as err:
            with self._lock:
                self.error = str(err)
            log.warning(
                "cannot read EC2; keeping the last facts", extra={"error": str(err), "age": self.age()}
            )
            return
        found = aws_findings(self.state, cluster.nodes, cluster.pods, facts)
        with self._lock:
            before = set(self.findings)
            if set(found) != before:
                self.generation += 1
            self.findings, self.read_at, self.error = found, facts.read_at, ""
        self.metrics.ec2_last_read.set(facts.read_at)
        for finding in found:
            if finding not in before:
                self._tell(finding)

    def age(self) -> float | None:
        """Seconds since the last whole read, or None before the first."""
        return None if self.read_at is None else max(0.0, time.time() - self.read_at)

    def status(self) -> dict[str, Any]:
        """For `/readyz`: how old the facts are and, when the last read failed, why."""
        age = self.age()
        status: dict[str, Any] = {
            "findings": len(self.findings),
            "ageSeconds": None if age is None else round(age),
        }
        if self.error:
            status["error"] = self.error
        return status

    def _tell(self, finding: Finding) -> None:
        if self.events is None or finding.kind not in ("Node", "Pod"):
            return
        reference = {
            "apiVersion": "v1",
            "kind": finding.kind,
            "name": finding.name,
            **({"namespace": finding.namespace} if finding.namespace else {}),
        }
        note = f"{finding.check} {CHECKS[finding.check].name}: {finding.message}; {finding.fix}"
        reason = "".join(word.title() for word in CHECKS[finding.check].name.split("-"))  # EniNotNoManage
        self.events.record(reference, "Warning", reason, "AuditAws", note)
