"""Events (`events.k8s.io/v1`) about what the reconciler changes or cannot change.

Recorded as client-go's event recorder does, so `kubectl describe` shows them and a busy
cluster is not flooded:
- isomorphic events (same object, type, reason, action and note) within 6 minutes are one
  Event with a `series` whose count grows, written back at most every 30 seconds;
- each object has a token bucket of 25 events refilled one every 5 minutes (client-go's spam
  filter); what it drops is counted, never queued.
Events of a cluster-scoped object (an AttachmentRule) go to the `default` namespace.
Writing an Event never raises: they are advice, and losing one loses nothing else.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from webhook.cluster.kube import ApiError, KubeApi
from webhook.multus.json_types import object_field

log = logging.getLogger("multihome.events")

CONTROLLER: Final = "multihome.io/reconciler"
SERIES_WINDOW: Final = 6 * 60.0
SERIES_FLUSH: Final = 30.0
BURST: Final = 25
REFILL_SECONDS: Final = 5 * 60.0
# Token buckets kept before the idle ones (full again) are forgotten.
BUCKETS_KEPT: Final = 1_000
EventType = Literal["Normal", "Warning"]


def events_path(namespace: str, name: str = "") -> str:
    """The events.k8s.io/v1 collection (or one Event) in `namespace`."""
    base = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
    return f"{base}/{name}" if name else base


def object_reference(obj: Mapping[str, Any], api_version: str, kind: str) -> dict[str, str]:
    """`regarding` for an object as the API returned it."""
    metadata = object_field(obj, "metadata")
    reference = {"apiVersion": api_version, "kind": kind, "name": str(metadata.get("name") or "")}
    for source, target in (
        ("namespace", "namespace"),
        ("uid", "uid"),
        ("resourceVersion", "resourceVersion"),
    ):
        if metadata.get(source):
            reference[target] = str(metadata[source])
    return reference


def _micro_time(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Series:
    name: str
    namespace: str
    started: float
    count: int = 1
    written_count: int = 1
    written_at: float = 0.0


@dataclass
class _Bucket:
    tokens: float = BURST
    at: float = 0.0


@dataclass
class EventRecorder:
    """Records Events through the API server; thread-safe."""

    api: KubeApi
    instance: str
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    dropped: int = 0
    _series: dict[tuple[str, ...], _Series] = field(default_factory=dict)
    _buckets: dict[tuple[str, str, str], _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self, regarding: Mapping[str, str], type_: EventType, reason: str, action: str, note: str
    ) -> None:
        """Record one occurrence (see the module's docstring for aggregation and limits)."""
        namespace = regarding.get("namespace") or "default"
        key = (namespace, regarding.get("kind", ""), regarding.get("name", ""), type_, reason, action, note)
        now = self.clock()
        with self._lock:
            series = self._series.get(key)
            if series is not None and now - series.started <= SERIES_WINDOW:
                series.count += 1
                flush = now - series.written_at >= SERIES_FLUSH
                if flush:
                    series.written_at, series.written_count = now, series.count
            else:
                if not self._allow(key[:3], now):
                    self.dropped += 1
                    return
                series = None
        if series is not None:
            if flush:
                self._write_series(series)
            return
        self._create(key, regarding, namespace, type_, reason, action, note, now)

    def _allow(self, bucket_key: tuple[str, str, str], now: float) -> bool:
        bucket = self._buckets.setdefault(bucket_key, _Bucket(at=now))
        bucket.tokens = min(BURST, bucket.tokens + (now - bucket.at) / REFILL_SECONDS)
        bucket.at = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _create(
        self,
        key: tuple[str, ...],
        regarding: Mapping[str, str],
        namespace: str,
        type_: EventType,
        reason: str,
        action: str,
        note: str,
        now: float,
    ) -> None:
        stamp = self.wall_clock()
        # Named as client-go names Events: the object's name and the time in hex nanoseconds.
        name = f"{regarding.get('name') or 'object'}.{int(stamp.timestamp() * 1e9):x}"
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "eventTime": _micro_time(stamp),
            "reportingController": CONTROLLER,
            "reportingInstance": self.instance[:128],
            "action": action,
            "reason": reason,
            "regarding": dict(regarding),
            "note": note[:1024],
            "type": type_,
        }
        try:
            self.api.write("POST", events_path(namespace), body)
        except ApiError as err:
            log.warning("cannot record an Event", extra={"reason": reason, "error": str(err)})
            return
        with self._lock:
            self._series = {k: s for k, s in self._series.items() if now - s.started <= SERIES_WINDOW}
            self._series[key] = _Series(name, namespace, now, written_at=now)
            if len(self._buckets) > len(self._series) + BUCKETS_KEPT:
                # A bucket idle long enough to be full again is the same as none: forget it,
                # or every object ever reported on would stay here.
                self._buckets = {
                    k: b for k, b in self._buckets.items() if now - b.at < (BURST - b.tokens) * REFILL_SECONDS
                }

    def _write_series(self, series: _Series) -> None:
        body = {
            "series": {"count": series.written_count, "lastObservedTime": _micro_time(self.wall_clock())},
        }
        try:
            self.api.write(
                "PATCH",
                events_path(series.namespace, series.name),
                body,
                content_type="application/merge-patch+json",
            )
        except ApiError as err:
            log.warning("cannot update an Event series", extra={"event": series.name, "error": str(err)})
