"""The Event recorder: series for repeats, a token bucket per object, never an exception.

The API here is tests/fakes.py's WriteRecorder, a stand-in with KubeApi's `write`; the recorder against the
test API server is in tests/test_reconcile.py, and against kube-apiserver in the tier."""

from __future__ import annotations

import pytest

from policies.controllers.events import (
    BUCKETS_KEPT,
    BURST,
    REFILL_SECONDS,
    SERIES_FLUSH,
    SERIES_WINDOW,
    EventRecorder,
)
from tests.fakes import WriteRecorder
from webhook.cluster.kube import ApiError

POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "namespace": "core", "name": "upf"}


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


@pytest.fixture
def recorder(clock: list[float]) -> tuple[EventRecorder, WriteRecorder]:
    api = WriteRecorder()
    return EventRecorder(api, "pod-a", clock=lambda: clock[0]), api


def test_repeats_become_a_series_written_at_most_every_30_seconds(
    recorder: tuple[EventRecorder, WriteRecorder], clock: list[float]
) -> None:
    events, api = recorder
    for _ in range(3):
        events.record(POLICY, "Normal", "Enriched", "Enrich", "added 2 peers")
    assert [w[0] for w in api.writes] == ["POST"]
    clock[0] += SERIES_FLUSH
    events.record(POLICY, "Normal", "Enriched", "Enrich", "added 2 peers")
    method, path, body = api.writes[-1]
    assert method == "PATCH"
    assert path == f"/apis/events.k8s.io/v1/namespaces/core/events/{api.writes[0][2]['metadata']['name']}"
    assert body["series"]["count"] == 4
    clock[0] += SERIES_WINDOW
    events.record(POLICY, "Normal", "Enriched", "Enrich", "added 2 peers")
    assert [w[0] for w in api.writes] == ["POST", "PATCH", "POST"], "a new series after 6 minutes"


def test_another_note_is_another_event(recorder: tuple[EventRecorder, WriteRecorder]) -> None:
    events, api = recorder
    events.record(POLICY, "Normal", "Enriched", "Enrich", "added 2 peers")
    events.record(POLICY, "Normal", "Enriched", "Enrich", "added 3 peers")
    assert [w[0] for w in api.writes] == ["POST", "POST"]


def test_each_object_has_a_bucket_of_25_refilled_every_5_minutes(
    recorder: tuple[EventRecorder, WriteRecorder], clock: list[float]
) -> None:
    events, api = recorder
    for index in range(BURST + 3):
        events.record(POLICY, "Warning", "EnrichmentFailed", "Enrich", f"attempt {index}")
    assert (len(api.writes), events.dropped) == (BURST, 3)
    events.record({**POLICY, "name": "other"}, "Warning", "EnrichmentFailed", "Enrich", "attempt 0")
    assert len(api.writes) == BURST + 1, "another object has its own bucket"
    clock[0] += REFILL_SECONDS
    events.record(POLICY, "Warning", "EnrichmentFailed", "Enrich", "after a while")
    assert len(api.writes) == BURST + 2


def test_buckets_of_objects_long_quiet_are_forgotten(
    recorder: tuple[EventRecorder, WriteRecorder], clock: list[float]
) -> None:
    events, _api = recorder
    for index in range(BUCKETS_KEPT + 10):
        events.record({**POLICY, "name": f"p{index}"}, "Normal", "Enriched", "Enrich", "added 1 peer")
    assert len(events._buckets) == BUCKETS_KEPT + 10
    for index in range(5):  # one object busy: its bucket is not full again when the others are
        events.record(POLICY, "Normal", "Enriched", "Enrich", f"busy {index}")
    clock[0] += REFILL_SECONDS + SERIES_WINDOW  # one token back each: full again
    events.record({**POLICY, "name": "new"}, "Normal", "Enriched", "Enrich", "added 1 peer")
    assert len(events._buckets) == 2, "every object that spent one token is full again and forgotten"


def test_cluster_scoped_objects_record_in_default_and_errors_are_swallowed(
    recorder: tuple[EventRecorder, WriteRecorder],
) -> None:
    events, api = recorder
    rule = {"apiVersion": "multihome.io/v1alpha1", "kind": "AttachmentRule", "name": "dataplane"}
    events.record(rule, "Warning", "NetworkMissing", "Validate", "gives kube-system/x, which do not exist")
    method, path, body = api.writes[0]
    assert method == "POST"
    assert path == "/apis/events.k8s.io/v1/namespaces/default/events"
    assert (
        body["regarding"] == rule
        and body["type"] == "Warning"
        and body["metadata"]["name"].startswith("dataplane.")
    )
    api.refuse = ApiError(403, "forbidden")
    events.record(rule, "Warning", "InvalidSpec", "Validate", "broken")  # logged, not raised
