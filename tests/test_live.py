"""LiveState against a real HTTP API server on loopback that drops, expires, fails and stalls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from policies.audit import audit
from tests.fake_apiserver import FakeApiServer
from tests.support import IPVLAN, nad, namespace, rule
from webhook.cluster.kube import Endpoint, HttpKubeApi
from webhook.cluster.live import NADS_PATH, NAMESPACES_PATH, PODS_PATH, POLICIES_PATH, RULES_PATH, LiveState


def pod_meta(namespace: str, name: str, **annotations: str) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": {"app": "upf"},
            "annotations": {**annotations, "unrelated/big": "x" * 100},
            "managedFields": [{"manager": "kubelet"}],
        },
    }


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    assert check(), "the cache did not converge in time"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeApiServer, HttpKubeApi]]:
    server = FakeApiServer(bookmark_interval=0.2)
    server.put(NAMESPACES_PATH, namespace("kube-system"))
    server.put(NAMESPACES_PATH, namespace("core", **{"multihome.io/profile": "dataplane"}))
    server.put(NADS_PATH, nad("dp", "kube-system", IPVLAN))
    server.put(RULES_PATH, rule("dataplane", "dataplane"))
    server.put(PODS_PATH, pod_meta("core", "upf-1", **{"k8s.v1.cni.cncf.io/networks": "kube-system/dp"}))
    port = server.serve()
    client = HttpKubeApi(Endpoint.load(server.kubeconfig(tmp_path, port)))
    yield server, client
    server.close()


def start(client: HttpKubeApi, **kwargs: Any) -> LiveState:
    return LiveState(client, watch_timeout=2, **kwargs).start()


def test_lists_then_follows_events(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    state = start(client)
    try:
        eventually(state.ready)
        assert state.counts() == {
            "namespaces": 2,
            "networkattachmentdefinitions": 1,
            "attachmentrules": 1,
            "pods": 1,
            "networkpolicies": 0,
        }
        core = state.namespace("core")
        assert core is not None and core.labels == {"multihome.io/profile": "dataplane"}
        assert [r.name for r in state.rulebook().for_namespace(core.labels)] == ["dataplane"]
        (upf,) = state.pods("core")
        assert upf.annotations == {"k8s.v1.cni.cncf.io/networks": "kube-system/dp"}, (
            "only the annotations decisions read are kept"
        )

        server.put(NAMESPACES_PATH, namespace("edge", **{"multihome.io/profile": "signaling"}))
        server.put(RULES_PATH, rule("signaling", "signaling"))
        server.put(NAMESPACES_PATH, namespace("core", **{"multihome.io/profile": "gone"}))
        server.delete(PODS_PATH, "core", "upf-1")
        server.put(
            POLICIES_PATH,
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "p", "namespace": "core", "managedFields": [{}]},
                "spec": {"podSelector": {}},
            },
        )
        eventually(
            lambda: (
                state.namespace("edge") is not None
                and len(state.rulebook()) == 2
                and not list(state.pods())
                and len(list(state.network_policies("core"))) == 1
            )
        )
        assert state.namespace("core").labels == {"multihome.io/profile": "gone"}  # type: ignore[union-attr]
        assert "managedFields" not in next(iter(state.network_policies()))["metadata"]
    finally:
        state.stop()


def test_a_dropped_stream_resumes_without_losing_events(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    state = start(client)
    try:
        eventually(state.ready)
        server.fault(NAMESPACES_PATH, "drop", 2)  # the next watch dies after two events
        eventually(lambda: not server.collections[NAMESPACES_PATH].faults, timeout=5)
        for i in range(5):
            server.put(NAMESPACES_PATH, namespace(f"team-{i}"))
        eventually(lambda: all(state.namespace(f"team-{i}") is not None for i in range(5)))
        assert len(list(state.namespaces())) == 7
    finally:
        state.stop()


def test_410_gone_relists_and_converges(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    state = start(client)
    try:
        eventually(state.ready)
        server.freeze_next_watch(NADS_PATH)  # the reflector misses what happens next
        server.put(NADS_PATH, nad("late", "core", IPVLAN))
        server.delete(NADS_PATH, "kube-system", "dp")
        server.compact(NADS_PATH)
        eventually(lambda: [n.ref for n in state.nads()] == ["core/late"], timeout=15)
        assert state.sources()[1].relists >= 1
    finally:
        state.stop()


def test_errors_back_off_and_readiness_stays_honest(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    for _ in range(3):
        server.fault(PODS_PATH, "500")
    state = start(client)
    try:
        time.sleep(0.3)
        assert not state.ready(), "ready before the Pods were listed"
        eventually(state.ready, timeout=15)
        pods = next(s for s in state.sources() if s.resource == "pods")
        assert pods.errors == 3
        assert len(list(state.pods())) == 1
    finally:
        state.stop()


def test_a_slow_list_keeps_the_state_unready(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    server.fault(NAMESPACES_PATH, "slow", 1.0)
    state = start(client)
    try:
        time.sleep(0.5)
        assert not state.ready()
        eventually(state.ready)
    finally:
        state.stop()


def test_bookmarks_keep_the_freshness_age_low(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    _, client = api
    state = start(client)
    try:
        eventually(state.ready)
        time.sleep(1.2)
        ages = {s.resource: s.last_event_age for s in state.sources()}
        assert all(age is not None and age < 1.0 for age in ages.values()), ages
    finally:
        state.stop()


def test_a_crd_installed_later_is_picked_up(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    server.set_served(RULES_PATH, False)
    state = start(client)
    try:
        eventually(state.ready)
        rules = next(s for s in state.sources() if s.resource == "attachmentrules")
        assert rules.missing and rules.objects == 0
        server.set_served(RULES_PATH, True)
        eventually(lambda: len(state.rulebook()) == 1, timeout=15)
        assert not next(s for s in state.sources() if s.resource == "attachmentrules").missing
    finally:
        state.stop()


def test_a_namespace_not_cached_yet_is_looked_up_once(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    state = start(client)
    try:
        eventually(state.ready)
        server.freeze_next_watch(NAMESPACES_PATH)
        server.put(NAMESPACES_PATH, namespace("brand-new", team="x"))
        found = state.namespace("brand-new")
        assert found is not None and found.labels == {"team": "x"}
        assert state.namespace("nowhere") is None
        assert state.namespace("nowhere") is None
        lookups = [r for r in server.requests if r.startswith("/api/v1/namespaces/nowhere")]
        assert len(lookups) == 1, "a miss is remembered, not fetched again at once"
    finally:
        state.stop()


def test_readers_see_whole_relists(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    for i in range(500):
        server.put(PODS_PATH, pod_meta("bulk", f"a-{i}", **{"k8s.v1.cni.cncf.io/networks": "kube-system/dp"}))
    state = start(client)
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(len(list(state.pods("bulk"))))

    try:
        eventually(lambda: len(list(state.pods("bulk"))) == 500)
        reader = threading.Thread(target=read)
        reader.start()
        server.freeze_next_watch(PODS_PATH)
        with server.lock:  # swap all 500 for 500 others behind the reflector's back
            server.version += 1
            store = server.collections[PODS_PATH]
            for i in range(500):
                del store.objects[("bulk", f"a-{i}")]
            for i in range(500):
                obj = pod_meta("bulk", f"b-{i}", **{"k8s.v1.cni.cncf.io/networks": "kube-system/dp"})
                obj["metadata"]["resourceVersion"] = str(server.version)
                store.objects[("bulk", f"b-{i}")] = obj
        server.compact(PODS_PATH)
        eventually(lambda: {p.name for p in state.pods("bulk")} == {f"b-{i}" for i in range(500)}, timeout=15)
        stop.set()
        reader.join()
        assert seen == {500}, f"a reader saw a half-applied relist: {sorted(seen)}"
    finally:
        stop.set()
        state.stop()


NETWORKS = "k8s.v1.cni.cncf.io/networks"


def test_lists_are_read_in_pages_and_an_expired_continue_lists_again(
    api: tuple[FakeApiServer, HttpKubeApi],
) -> None:
    server, client = api
    for i in range(1_200):
        server.put(PODS_PATH, pod_meta("bulk", f"p-{i:04d}", **{NETWORKS: "kube-system/dp"}))
    server.expire_continues = 1  # the second page's token is refused: etcd compacted meanwhile
    state = start(client)
    try:
        eventually(state.ready)
        assert len(list(state.pods("bulk"))) == 1_200
        pod_lists = [r for r in server.requests if r.startswith(PODS_PATH + "?") and "watch=" not in r]
        assert all("limit=500" in r for r in pod_lists)
        # first page, a refused continue, then the list from the start: 3 pages
        assert ["continue=" in r for r in pod_lists] == [False, True, False, True, True]
    finally:
        state.stop()


def test_pods_without_secondary_networks_are_not_kept_but_the_audit_reads_them(
    api: tuple[FakeApiServer, HttpKubeApi],
) -> None:
    server, client = api
    server.put(PODS_PATH, pod_meta("core", "plain"))  # "core" is selected by rule dataplane
    # Multus writes network-status on every Pod it starts, those with only the VPC CNI too.
    status = '[{"name": "aws-cni", "interface": "eth0", "ips": ["192.168.1.5"], "default": true}]'
    server.put(PODS_PATH, pod_meta("core", "primary-only", **{"k8s.v1.cni.cncf.io/network-status": status}))
    state = start(client)
    try:
        eventually(state.ready)
        assert [p.name for p in state.pods("core")] == ["upf-1"]
        assert sorted(p.name for p in state.all_pods()) == ["plain", "primary-only", "upf-1"]
        late = [f for f in audit(state) if f.check == "MH015"]
        assert sorted(f.name for f in late) == ["plain", "primary-only"]
        # A Pod that loses its networks leaves the cache; one that gains them enters it.
        server.put(PODS_PATH, pod_meta("core", "upf-1"))
        server.put(PODS_PATH, pod_meta("core", "plain", **{NETWORKS: "kube-system/dp"}))
        eventually(lambda: [p.name for p in state.pods("core")] == ["plain"])
    finally:
        state.stop()


def test_pods_of_one_workload_share_one_label_set(api: tuple[FakeApiServer, HttpKubeApi]) -> None:
    server, client = api
    for i in range(3):
        server.put(PODS_PATH, pod_meta("core", f"upf-{i}", **{NETWORKS: "kube-system/dp"}))
    state = start(client)
    try:
        eventually(lambda: len(list(state.pods("core"))) == 3)
        assert len({id(p.labels) for p in state.pods("core")}) == 1
    finally:
        state.stop()


def test_events_that_change_nothing_kept_do_not_change_the_state(
    api: tuple[FakeApiServer, HttpKubeApi],
) -> None:
    server, client = api
    state = start(client)
    try:
        eventually(state.ready)
        generation = state.generation()
        # A status update, as kubelets send all day: the metadata-only watch still sees it.
        upf = pod_meta("core", "upf-1", **{NETWORKS: "kube-system/dp"})
        upf["metadata"]["annotations"]["unrelated/big"] = "y" * 100
        server.put(PODS_PATH, upf)
        eventually(lambda: server.version <= int(client.list(PODS_PATH)[1]))
        time.sleep(0.5)  # the event has been read by now
        assert state.generation() == generation
        server.put(PODS_PATH, pod_meta("core", "upf-1", **{NETWORKS: "kube-system/dp@net9"}))
        eventually(lambda: state.generation() > generation)
    finally:
        state.stop()
