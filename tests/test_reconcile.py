"""Lease leader election and the reconciler, against the HTTP test API server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policies.controllers.events import EventRecorder
from policies.controllers.reconcile import MNP_PATH, Reconciler
from tests.fake_apiserver import FakeApiServer
from tests.support import IPVLAN, dataplane_objects, nad
from tests.test_live import eventually
from webhook.cluster.kube import Endpoint, HttpKubeApi
from webhook.cluster.lease import LeaseElector
from webhook.cluster.live import NADS_PATH, POLICIES_PATH, LiveState

ENRICHMENT = "multihome.io/enrichment"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeApiServer, HttpKubeApi]]:
    server = FakeApiServer(bookmark_interval=0.2)
    for collection, obj in dataplane_objects("upf-1"):
        server.put(collection, obj)
    server.put(NADS_PATH, nad("dp", "kube-system", IPVLAN, {"multihome.io/ports": "UDP/2152"}))
    server.put(POLICIES_PATH, policy("upf"))
    server.put(POLICIES_PATH, policy("web", {"matchLabels": {"app": "web"}}))
    port = server.serve()
    yield server, HttpKubeApi(Endpoint.load(server.kubeconfig(tmp_path, port)))
    server.close()


def policy(name: str, selector: dict[str, Any] | None = None) -> dict[str, Any]:
    selector = selector if selector is not None else {"matchLabels": {"app": "upf"}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "core", "uid": f"uid-{name}"},
        "spec": {"podSelector": selector, "ingress": [{"from": [{"podSelector": selector}]}]},
    }


def stored(server: FakeApiServer, name: str) -> dict[str, Any]:
    return server.collections[POLICIES_PATH].objects[("core", name)]


def synced(client: HttpKubeApi) -> LiveState:
    state = LiveState(client, watch_timeout=2).start()
    eventually(state.ready)
    return state


def test_one_candidate_leads_and_another_takes_over_when_it_stops(
    api: tuple[FakeApiServer, HttpKubeApi],
) -> None:
    server, client = api
    clock = FakeClock()
    a = LeaseElector(client, "multihome", "reconciler", "pod-a", clock=clock)
    b = LeaseElector(client, "multihome", "reconciler", "pod-b", clock=clock)
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False
    clock.now += 10
    assert a.try_acquire_or_renew() is True  # renewed
    assert b.try_acquire_or_renew() is False
    clock.now += 14  # b saw the renewal 14 s ago: not expired yet
    assert b.try_acquire_or_renew() is False
    clock.now += 2  # a stopped renewing 16 s ago
    assert b.try_acquire_or_renew() is True
    assert a.try_acquire_or_renew() is False
    assert not a.is_leader and b.is_leader
    lease = server.collections["/apis/coordination.k8s.io/v1/leases"].objects[("multihome", "reconciler")]
    assert lease["spec"]["holderIdentity"] == "pod-b"
    assert lease["spec"]["leaseTransitions"] == 1


def test_racing_for_an_expired_lease_has_one_winner(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    _, client = api
    clock = FakeClock()
    a = LeaseElector(client, "multihome", "race", "pod-a", clock=clock)
    b = LeaseElector(client, "multihome", "race", "pod-b", clock=clock)
    c = LeaseElector(client, "multihome", "race", "pod-c", clock=clock)
    assert a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    c.try_acquire_or_renew()
    clock.now += 20
    # b and c both read the expired lease, then both write with that resourceVersion.
    lease = client.get(b.path, timeout=1)
    assert lease is not None
    original_get = client.get
    client.get = lambda path, *, timeout: lease  # type: ignore[method-assign]
    try:
        results = [b.try_acquire_or_renew(), c.try_acquire_or_renew()]
    finally:
        client.get = original_get  # type: ignore[method-assign]
    assert sorted(results) == [False, True]


def test_a_pass_enriches_stale_policies_only(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    state = synced(client)
    try:
        report = Reconciler(state, client, writes_per_second=1000).reconcile_once()
        assert (report.policies, report.patched, report.errors) == (2, 1, 0)
        upf = stored(server, "upf")
        assert {"ipBlock": {"cidr": "10.0.4.0/24"}} in upf["spec"]["ingress"][0]["from"]
        assert json.loads(upf["metadata"]["annotations"][ENRICHMENT])["v"] == 2
        assert ENRICHMENT not in (stored(server, "web")["metadata"].get("annotations") or {})
        eventually(
            lambda: (
                ENRICHMENT
                in (
                    next(p for p in state.network_policies() if p["metadata"]["name"] == "upf")[
                        "metadata"
                    ].get("annotations")
                    or {}
                )
            )
        )
        assert Reconciler(state, client, writes_per_second=1000).reconcile_once().patched == 0
    finally:
        state.stop()


def test_a_changed_range_is_followed_within_seconds(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    state = synced(client)
    reconciler = Reconciler(state, client, min_interval=0.1, writes_per_second=1000)
    state.add_listener(reconciler.changed.set)
    reconciler.start()
    try:
        eventually(lambda: "10.0.4.0/24" in json.dumps(stored(server, "upf")["spec"]))
        server.put(
            NADS_PATH,
            nad(
                "dp",
                "kube-system",
                IPVLAN.replace("10.0.4.0/24", "10.0.64.0/22"),
                {"multihome.io/ports": "UDP/2152"},
            ),
        )
        eventually(
            lambda: (
                "10.0.64.0/22" in json.dumps(stored(server, "upf")["spec"])
                and "10.0.4.0/24" not in json.dumps(stored(server, "upf")["spec"])
            )
        )
    finally:
        reconciler.stop()
        state.stop()


def test_dry_run_writes_nothing(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    state = synced(client)
    try:
        before = len([r for r in server.requests if r.startswith("PATCH")])
        report = Reconciler(state, client, dry_run=True).reconcile_once()
        assert report.patched == 1
        assert len([r for r in server.requests if r.startswith("PATCH")]) == before
        assert ENRICHMENT not in (stored(server, "upf")["metadata"].get("annotations") or {})
    finally:
        state.stop()


def test_a_concurrent_edit_wins_and_the_next_pass_enriches_it(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    state = synced(client)
    try:
        state.stop()  # the cache keeps the old resourceVersion
        edited = policy("upf")
        edited["spec"]["ingress"][0]["ports"] = [{"protocol": "TCP", "port": 80}]
        server.put(POLICIES_PATH, edited)
        report = Reconciler(state, client, writes_per_second=1000).reconcile_once()
        assert report.errors == 1 and report.patched == 0
        assert stored(server, "upf")["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 80}]
    finally:
        state.stop()


def test_companions_follow_their_policies_where_the_crd_exists(
    api: tuple[FakeApiServer, HttpKubeApi],
) -> None:
    server, client = api
    state = synced(client)
    try:
        Reconciler(state, client, writes_per_second=1000).reconcile_once()
        companions = server.collections[MNP_PATH].objects
        assert list(companions) == [("core", "upf-multihome")]
        companion = companions[("core", "upf-multihome")]
        assert companion["metadata"]["annotations"]["k8s.v1.cni.cncf.io/policy-for"] == "kube-system/dp"
        assert companion["metadata"]["ownerReferences"][0]["uid"] == "uid-upf"
        assert Reconciler(state, client, writes_per_second=1000).reconcile_once().companions_written == 0
        server.delete(POLICIES_PATH, "core", "upf")
        eventually(lambda: len(list(state.network_policies())) == 1)
        assert Reconciler(state, client, writes_per_second=1000).reconcile_once().companions_deleted == 1
        assert not companions
    finally:
        state.stop()


def test_no_companions_without_the_crd(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    server.set_served(MNP_PATH, False)
    state = synced(client)
    try:
        report = Reconciler(state, client, writes_per_second=1000).reconcile_once()
        assert report.patched == 1 and report.companions_written == 0 and report.errors == 0
    finally:
        state.stop()


EVENTS = "/apis/events.k8s.io/v1/events"


def test_what_the_reconciler_changes_is_recorded_as_events(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    state = synced(client)
    try:
        recorder = EventRecorder(client, "pod-a")
        Reconciler(state, client, writes_per_second=1000, events=recorder).reconcile_once()
        server.delete(POLICIES_PATH, "core", "upf")
        eventually(lambda: len(list(state.network_policies())) == 1)
        Reconciler(state, client, writes_per_second=1000, events=recorder).reconcile_once()
        recorded = sorted(server.collections[EVENTS].objects.values(), key=lambda e: e["reason"])
        assert [(e["reason"], e["type"], e["regarding"]["name"]) for e in recorded] == [
            ("CompanionCreated", "Normal", "upf"),
            ("CompanionDeleted", "Normal", "upf"),
            ("Enriched", "Normal", "upf"),
        ]
        enriched = recorded[2]
        assert enriched["note"] == "added 1 ipBlock peer and 1 rule for the ports of secondary networks"
        assert enriched["regarding"] == {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "name": "upf",
            "namespace": "core",
            "uid": "uid-upf",
            "resourceVersion": enriched["regarding"]["resourceVersion"],
        }
        assert (enriched["reportingController"], enriched["reportingInstance"]) == (
            "multihome.io/reconciler",
            "pod-a",
        )
        assert enriched["metadata"]["namespace"] == "core"
    finally:
        state.stop()
