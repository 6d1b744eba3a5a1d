"""Audit findings as policy reports, the objects Policy Reporter and other UIs display.

Two APIs carry them, with the same shape: OpenReports (`openreports.io/v1alpha1`, `Report`
and `ClusterReport`) and its predecessor from the Kubernetes Policy WG
(`wgpolicyk8s.io/v1alpha2`, `PolicyReport` and `ClusterPolicyReport`). One report per
namespace with findings, one cluster-scoped report for cluster-scoped objects, each named
`multihome` and labelled as ours. `policy_reports` is a pure function of the findings;
`sync_policy_reports` (the leader, at most once a minute) finds which API the cluster
serves, updates reports in place, creates the missing and deletes those with nothing left.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from policies.audit import Finding
from webhook.cluster.kube import ApiError, KubeApi
from webhook.decisions.checks import CHECKS, Severity
from webhook.multus.json_types import object_field

log = logging.getLogger("multihome.policy_reports")

NAME: Final = "multihome"
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "multihome"}
SOURCE: Final = "multihome"
# A finding's severity as a result and a report severity (the reports' own vocabulary).
RESULTS: Final[Mapping[Severity, tuple[str, str]]] = {
    "error": ("fail", "high"),
    "warning": ("warn", "medium"),
    "info": ("warn", "info"),
}
API_VERSIONS: Final[Mapping[str, str]] = {
    "NetworkAttachmentDefinition": "k8s.cni.cncf.io/v1",
    "AttachmentRule": "multihome.io/v1alpha1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "ReplicaSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
}


@dataclass(frozen=True)
class ReportApi:
    """One of the two report APIs: its group/version and its two kinds and their plurals."""

    api_version: str
    kind: str
    cluster_kind: str
    plural: str
    cluster_plural: str

    def path(self, namespace: str | None, name: str = "") -> str:
        """The collection (or one report) of namespaced reports in `namespace`, or of cluster reports."""
        base = f"/apis/{self.api_version}"
        collection = (
            f"{base}/namespaces/{namespace}/{self.plural}" if namespace else f"{base}/{self.cluster_plural}"
        )
        return f"{collection}/{name}" if name else collection


OPENREPORTS: Final = ReportApi(
    "openreports.io/v1alpha1", "Report", "ClusterReport", "reports", "clusterreports"
)
WGPOLICY: Final = ReportApi(
    "wgpolicyk8s.io/v1alpha2", "PolicyReport", "ClusterPolicyReport", "policyreports", "clusterpolicyreports"
)
REPORT_APIS: Final = (OPENREPORTS, WGPOLICY)


def _result(finding: Finding, timestamp: dt.datetime) -> dict[str, Any]:
    outcome, severity = RESULTS[finding.severity]
    resource = {
        "apiVersion": API_VERSIONS.get(finding.kind, "v1"),
        "kind": finding.kind,
        "name": finding.name,
    }
    if finding.namespace:
        resource["namespace"] = finding.namespace
    return {
        "source": SOURCE,
        "policy": finding.check,
        "rule": CHECKS[finding.check].name,
        "category": "Multus on EKS",
        "result": outcome,
        "severity": severity,
        "message": finding.message,
        "properties": {"fix": finding.fix},
        "resources": [resource],
        "timestamp": {"seconds": int(timestamp.timestamp()), "nanos": 0},
    }


def policy_reports(findings: Iterable[Finding], api: ReportApi, now: dt.datetime) -> list[dict[str, Any]]:
    """The reports for `findings`: one per namespace with findings, one cluster report if needed."""
    by_namespace: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        by_namespace[finding.namespace].append(finding)
    reports = []
    for namespace in sorted(by_namespace):
        results = [_result(f, now) for f in by_namespace[namespace]]
        summary = {"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0}
        for result in results:
            summary[result["result"]] += 1
        metadata: dict[str, Any] = {"name": NAME, "labels": dict(MANAGED_BY)}
        if namespace:
            metadata["namespace"] = namespace
        reports.append(
            {
                "apiVersion": api.api_version,
                "kind": api.kind if namespace else api.cluster_kind,
                "metadata": metadata,
                "summary": summary,
                "results": results,
            }
        )
    return reports


def served_api(api: KubeApi) -> ReportApi | None:
    """The report API the cluster serves, OpenReports first; None when neither is."""
    for candidate in REPORT_APIS:
        try:
            if api.get(f"/apis/{candidate.api_version}", timeout=5) is not None:
                return candidate
        except ApiError as err:
            if err.status not in (403, 404):
                raise
    return None


@dataclass
class SyncResult:
    """What one pass did."""

    api: ReportApi | None
    written: int = 0
    deleted: int = 0


def _same(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Equal but for the results' timestamps, which change every pass."""

    def comparable(report: Mapping[str, Any]) -> Any:
        results = [{k: v for k, v in r.items() if k != "timestamp"} for r in report.get("results") or []]
        return report.get("summary"), results

    return bool(comparable(current) == comparable(desired))


def sync_policy_reports(
    api: KubeApi, findings: Sequence[Finding], now: dt.datetime | None = None
) -> SyncResult:
    """Bring the cluster's multihome reports to `findings`, in place."""
    report_api = served_api(api)
    result = SyncResult(report_api)
    if report_api is None:
        return result
    desired = {
        (str(object_field(r, "metadata").get("namespace") or ""), r["kind"]): r
        for r in policy_reports(findings, report_api, now or dt.datetime.now(dt.UTC))
    }
    selector = "?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dmultihome"
    existing: dict[tuple[str, str], Mapping[str, Any]] = {}
    for kind, plural in (
        (report_api.kind, report_api.plural),
        (report_api.cluster_kind, report_api.cluster_plural),
    ):
        items, _ = api.list(f"/apis/{report_api.api_version}/{plural}{selector}")
        for item in items:
            metadata = object_field(item, "metadata")
            if metadata.get("name") == NAME:
                existing[(str(metadata.get("namespace") or ""), kind)] = item
    for key, report in desired.items():
        namespace = key[0] or None
        current = existing.get(key)
        if current is None:
            api.write("POST", report_api.path(namespace), report)
        elif not _same(current, report):
            version = object_field(current, "metadata").get("resourceVersion")
            body = {**report, "metadata": {**report["metadata"], "resourceVersion": version}}
            api.write("PUT", report_api.path(namespace, NAME), body)
        else:
            continue
        result.written += 1
    for key in existing.keys() - desired.keys():
        try:
            api.write("DELETE", report_api.path(key[0] or None, NAME), None)
            result.deleted += 1
        except ApiError as err:
            if err.status != 404:
                raise
    return result
