"""Policy reports: the objects from findings, and the leader's sync (in place, created, deleted)
through a recording stand-in with KubeApi's interface; the real API server is the tier's."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from policies.audit import audit
from policies.controllers.policy_reports import OPENREPORTS, WGPOLICY, policy_reports, sync_policy_reports
from tests.support import FIXTURES
from webhook.cluster.files import FileState
from webhook.cluster.kube import ApiError, Page

NOW = dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def findings() -> list[Any]:
    state = FileState.from_directory(FIXTURES / "audit")
    return audit(state, state.manifests())


def test_one_report_per_namespace_and_one_for_the_cluster(findings: list[Any]) -> None:
    reports = policy_reports(findings, WGPOLICY, NOW)
    kinds = {(r["kind"], r["metadata"].get("namespace", "")) for r in reports}
    namespaces = {f.namespace for f in findings}
    assert kinds == {("ClusterPolicyReport" if not ns else "PolicyReport", ns) for ns in namespaces}
    for report in reports:
        assert report["apiVersion"] == "wgpolicyk8s.io/v1alpha2" and report["metadata"]["name"] == "multihome"
        assert sum(report["summary"].values()) == len(report["results"])
    overlap = next(r for report in reports for r in report["results"] if r["policy"] == "MH050")
    assert overlap["rule"] == "nad-addresses-overlap"
    assert (overlap["result"], overlap["severity"], overlap["source"]) == ("fail", "high", "multihome")
    assert overlap["resources"][0]["apiVersion"] == "k8s.cni.cncf.io/v1"
    assert overlap["properties"]["fix"].startswith("give each network its own addresses")
    assert {r["kind"] for r in policy_reports(findings, OPENREPORTS, NOW)} == {"Report", "ClusterReport"}


class ReportsApi:
    """KubeApi's calls over an in-memory store of reports; discovery serves `served`."""

    def __init__(self, served: str | None) -> None:
        self.served = served
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    def get(self, path: str, *, timeout: float) -> dict[str, Any] | None:
        return {"kind": "APIResourceList"} if self.served and path == f"/apis/{self.served}" else None

    def list(self, path: str, *, metadata_only: bool = False) -> tuple[list[dict[str, Any]], str]:
        plural = path.split("?", maxsplit=1)[0].rsplit("/", 1)[1]
        return [o for p, o in self.objects.items() if f"/{plural}/" in p], "1"

    def pages(self, path: str, *, metadata_only: bool = False, page_size: int = 500) -> Iterator[Page]:
        yield self.list(path, metadata_only=metadata_only)

    def watch(
        self, path: str, resource_version: str, *, timeout_seconds: int, metadata_only: bool = False
    ) -> Iterator[dict[str, Any]]:
        raise AssertionError("reports are never watched")

    def write(
        self, method: str, path: str, body: object, *, content_type: str = "application/json"
    ) -> dict[str, Any]:
        self.calls.append((method, path))
        if method == "POST":
            assert isinstance(body, dict)
            path = f"{path}/{body['metadata']['name']}"
            self.objects[path] = {
                **body,
                "metadata": {**body["metadata"], "resourceVersion": "1", "uid": path},
            }
        elif method == "PUT":
            assert isinstance(body, dict) and path in self.objects
            self.objects[path] = {
                **body,
                "metadata": {**body["metadata"], "uid": self.objects[path]["metadata"]["uid"]},
            }
        elif method == "DELETE" and self.objects.pop(path, None) is None:
            raise ApiError(404, "not found")
        return {}


def test_the_leader_keeps_reports_in_place(findings: list[Any]) -> None:
    api = ReportsApi("wgpolicyk8s.io/v1alpha2")
    first = sync_policy_reports(api, findings, NOW)
    assert (
        first.api is WGPOLICY and first.written == len({f.namespace for f in findings}) and first.deleted == 0
    )
    uids = {p: o["metadata"]["uid"] for p, o in api.objects.items()}
    api.calls.clear()
    assert sync_policy_reports(api, findings, NOW + dt.timedelta(minutes=1)).written == 0, (
        "same findings: no write"
    )
    apps_only = [f for f in findings if f.namespace == "apps"]
    apps_only = apps_only[1:]  # one finding fixed
    result = sync_policy_reports(api, apps_only, NOW)
    assert (result.written, result.deleted) == (1, len(uids) - 1)
    assert [c[0] for c in api.calls if c[0] != "DELETE"] == ["PUT"], "updated in place, not recreated"
    (path,) = api.objects
    assert (
        path.endswith("/namespaces/apps/policyreports/multihome")
        and api.objects[path]["metadata"]["uid"] == uids[path]
    )


def test_openreports_first_and_nothing_where_neither_is_served(findings: list[Any]) -> None:
    assert sync_policy_reports(ReportsApi("openreports.io/v1alpha1"), findings, NOW).api is OPENREPORTS
    neither = ReportsApi(None)
    assert sync_policy_reports(neither, findings, NOW).api is None and neither.calls == []
