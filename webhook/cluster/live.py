"""Live cluster state: list + watch caches that the admission path can trust.

One reflector thread per resource lists, then watches from the list's
resourceVersion with bookmarks. A watch the server ends (its timeout) is resumed
from the last resourceVersion seen; a dropped connection or a 5xx is retried with
jittered backoff from the same point; 410 Gone (history compacted) relists and
swaps the whole cache in one step, so readers never see a half-applied relist. A
missing CRD (Multus or multihome not installed yet) counts as an empty, synced
resource and is retried, and reported, rather than fatal.

Decisions read only memory. The one exception is bounded: a namespace or NAD not
in the cache (created a moment ago) is fetched once directly, with a short timeout,
a few at a time, and misses are remembered briefly.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Generic, TypeVar

from webhook.cluster.kube import ApiError, KubeApi
from webhook.decisions.snapshot import InvalidRule, Namespace, PodInfo, SourceStatus, pod_info
from webhook.multus.annotations import DEFAULT_NETWORK, INJECT, INJECTED_BY, NETWORKS, PREFIX
from webhook.multus.json_types import object_field, string_map
from webhook.multus.nad import NetworkAttachment, parse_network_attachment
from webhook.rules import AttachmentRule, RuleBook, parse_rule

log = logging.getLogger("multihome.live")

V = TypeVar("V")
Clock = Callable[[], float]

NAMESPACES_PATH: Final = "/api/v1/namespaces"
NADS_PATH: Final = "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions"
RULES_PATH: Final = "/apis/multihome.io/v1alpha1/attachmentrules"
PODS_PATH: Final = "/api/v1/pods"
POLICIES_PATH: Final = "/apis/networking.k8s.io/v1/networkpolicies"
# Pod annotations decisions read; the rest are dropped to keep memory flat. Not Multus'
# network-status: no decision reads it, and Multus writes it on every Pod it starts,
# those with no secondary network too.
KEPT_POD_ANNOTATIONS: Final = frozenset({NETWORKS, DEFAULT_NETWORK, INJECT, INJECTED_BY})


class Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


class Backoff:
    """Exponential backoff with full jitter: 0.5 s doubling to `ceiling`."""

    def __init__(self, ceiling: float = 30.0, base: float = 0.5, rng: random.Random | None = None) -> None:
        self.ceiling, self.base, self.rng = ceiling, base, rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.attempt = 0

    def next(self) -> float:
        delay: float = min(self.ceiling, self.base * 2.0**self.attempt)
        self.attempt += 1
        return delay * (0.5 + self.rng.random() / 2)

    def reset(self) -> None:
        self.attempt = 0


class Cache(Generic[V]):
    """Objects of one resource by namespace and name, replaced whole or changed one at a time.

    `convert` turns an object into what is kept of it, or None for an object not worth
    keeping (a Pod without secondary networks): such an object is dropped, and an event
    that makes a kept object one of those removes it.
    """

    def __init__(
        self,
        resource: str,
        path: str,
        convert: Callable[[Mapping[str, Any]], V | None],
        *,
        metadata_only: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        self.resource, self.path, self.convert, self.metadata_only = resource, path, convert, metadata_only
        self.clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, dict[str, V]] = {}
        self._count = 0
        self.synced = False
        self.missing = False
        self.relists = 0
        self.errors = 0
        self.watching = False
        # The API server's last refusal of a list or watch, for a user to read; None once it works.
        self.last_error: ApiError | None = None
        self.last_event: float | None = None
        self.listeners: list[Callable[[], None]] = []

    def replace(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Swap in a whole new list (a list or relist)."""
        fresh: dict[str, dict[str, V]] = {}
        count = 0
        for obj in objects:
            value = self.convert(obj)
            if value is not None:
                namespace, name = _key(obj)
                fresh.setdefault(namespace, {})[name] = value
                count += 1
        with self._lock:
            self._items, self._count = fresh, count
            self.last_event = self.clock()
        self._notify()

    def apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        """One watch event: ADDED, MODIFIED or DELETED.

        Listeners hear of it only when what is kept changed: most Pod events are status
        updates (a metadata-only watch still sends them), and each would otherwise make
        the enrichment index and the reconciler start over.
        """
        namespace, name = _key(obj)
        value = self.convert(obj) if kind != "DELETED" else None
        with self._lock:
            self.last_event = self.clock()
            bucket = self._items.get(namespace)
            if value is None:
                if bucket is None or bucket.pop(name, None) is None:
                    return
                self._count -= 1
                if not bucket:
                    del self._items[namespace]
            else:
                if bucket is None:
                    bucket = self._items[namespace] = {}
                previous = bucket.get(name)
                if previous is None:
                    self._count += 1
                elif previous == value:
                    return
                bucket[name] = value
        self._notify()

    def add_if_absent(self, obj: Mapping[str, Any]) -> V | None:
        """Insert an object fetched directly, unless the watch got there first."""
        namespace, name = _key(obj)
        value = self.convert(obj)
        if value is None:
            return None
        with self._lock:
            bucket = self._items.setdefault(namespace, {})
            if name in bucket:
                return bucket[name]
            bucket[name] = value
            self._count += 1
        self._notify()
        return value

    def touch(self) -> None:
        """A bookmark: the stream is alive even though nothing changed."""
        self.last_event = self.clock()

    def get(self, namespace: str, name: str) -> V | None:
        bucket = self._items.get(namespace)
        return bucket.get(name) if bucket is not None else None

    def values(self, namespace: str | None = None) -> list[V]:
        with self._lock:
            if namespace is not None:
                return list(self._items.get(namespace, {}).values())
            return [v for bucket in self._items.values() for v in bucket.values()]

    def __len__(self) -> int:
        return self._count

    def status(self) -> SourceStatus:
        age = None if self.last_event is None else max(0.0, self.clock() - self.last_event)
        return SourceStatus(
            self.resource,
            self.synced,
            self.missing,
            self._count,
            age,
            self.relists,
            self.errors,
            self.watching,
            self.last_error.status if self.last_error else None,
            str(self.last_error) if self.last_error else "",
        )

    def _notify(self) -> None:
        for listener in self.listeners:
            listener()


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = object_field(obj, "metadata")
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


class Reflector:
    """Keeps one Cache equal to the API server's view of its resource."""

    def __init__(
        self,
        api: KubeApi,
        cache: Cache[Any],
        stop: threading.Event,
        *,
        watch_timeout: int = 300,
        rng: random.Random | None = None,
    ) -> None:
        self.api, self.cache, self.stop = api, cache, stop
        self.watch_timeout = watch_timeout
        self.backoff = Backoff(rng=rng)
        self.missing_retry = Backoff(ceiling=60.0, base=2.0, rng=rng)

    def run(self) -> None:
        """List and watch until stopped; never raises."""
        while not self.stop.is_set():
            try:
                self._list_and_watch()
            except Gone:
                log.info("watch expired; relisting", extra={"resource": self.cache.resource})
            except ApiError as err:
                if err.status == 404:
                    self._mark_missing()
                    self.stop.wait(self.missing_retry.next())
                    continue
                self._failed(err)
            except Exception as err:  # a reflector must outlive any one bad response
                self._failed(err)

    def _failed(self, err: Exception) -> None:
        self.cache.errors += 1
        self.cache.last_error = (
            err if isinstance(err, ApiError) else ApiError(0, f"{type(err).__name__}: {err}")
        )
        self.cache.watching = False
        delay = self.backoff.next()
        log.warning(
            "list failed; retrying",
            extra={"resource": self.cache.resource, "error": str(err), "retry_in": round(delay, 2)},
        )
        self.stop.wait(delay)

    def _mark_missing(self) -> None:
        if not self.cache.missing:
            log.warning(
                "resource not served (CRD not installed?); retrying",
                extra={"resource": self.cache.resource, "path": self.cache.path},
            )
        if not self.cache.synced or len(self.cache):
            self.cache.replace([])
        self.cache.missing = True
        self.cache.synced = True

    def _list(self) -> str:
        """Fill the cache from a list read in pages; the list's resourceVersion.

        Each page is converted as it arrives, so only one page of raw objects is held at
        a time; the cache is swapped once the last page is in. A continue token that
        expired mid-list (410) starts the list again from the first page.
        """
        version = ""

        def objects() -> Iterator[dict[str, Any]]:
            nonlocal version
            for page, page_version in self.api.pages(self.cache.path, metadata_only=self.cache.metadata_only):
                version = page_version
                yield from page

        try:
            self.cache.replace(objects())
        except ApiError as err:
            if err.status == 410:
                raise Gone from None
            raise
        return version

    def _list_and_watch(self) -> None:
        relist = self.cache.synced
        version = self._list()
        if relist:
            self.cache.relists += 1
        self.cache.synced, self.cache.missing, self.cache.watching = True, False, True
        self.cache.last_error = None
        self.backoff.reset()
        self.missing_retry.reset()
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                version, events = self._watch(version)
            except ApiError as err:
                if err.status not in (0, 429) and err.status < 500:
                    raise
                self.cache.errors += 1
                self.cache.watching = False
                log.warning(
                    "watch interrupted; resuming", extra={"resource": self.cache.resource, "error": str(err)}
                )
                self.stop.wait(self.backoff.next())
                continue
            self.cache.watching = True  # the watch ran its course: the server is there
            if events == 0 and time.monotonic() - started < 1.0:
                self.stop.wait(self.backoff.next())  # a server that ends watches at once: do not spin
            else:
                self.backoff.reset()

    def _watch(self, version: str) -> tuple[str, int]:
        events = 0
        stream = self.api.watch(
            self.cache.path,
            version,
            timeout_seconds=self.watch_timeout,
            metadata_only=self.cache.metadata_only,
        )
        for event in stream:
            if self.stop.is_set():
                break
            events += 1
            self.cache.watching = True
            kind = event.get("type")
            obj = object_field(event, "object")
            if kind == "ERROR":
                code = obj.get("code")
                if code == 410:
                    raise Gone
                raise ApiError(
                    int(code) if isinstance(code, int) else 0, str(obj.get("message", "watch error"))
                )
            new_version = str(object_field(obj, "metadata").get("resourceVersion") or version)
            if kind == "BOOKMARK":
                self.cache.touch()
            elif kind in ("ADDED", "MODIFIED", "DELETED"):
                self.cache.apply(str(kind), obj)
            version = new_version
        return version, events


def namespace_of(obj: Mapping[str, Any]) -> Namespace:
    metadata = object_field(obj, "metadata")
    return Namespace(str(metadata.get("name") or ""), string_map(metadata.get("labels")))


def rule_of(obj: Mapping[str, Any]) -> AttachmentRule | InvalidRule:
    try:
        return parse_rule(obj)
    except ValueError as err:
        return InvalidRule(str(object_field(obj, "metadata").get("name") or ""), str(err))


class Interner:
    """One shared, read-only mapping per distinct label set.

    The Pods of a workload carry the same labels; at 30,000 Pods, one dict per Pod was
    a large share of the cache. The table forgets sets no Pod uses any more only by
    starting over when it grows past `limit` (sets in use stay shared by their Pods).
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._table: dict[frozenset[tuple[str, str]], Mapping[str, str]] = {}

    def __call__(self, labels: dict[str, str]) -> Mapping[str, str]:
        key = frozenset(labels.items())
        found = self._table.get(key)
        if found is None:
            if len(self._table) >= self.limit:
                self._table = {}
            found = self._table[key] = labels
        return found


def _kept_annotation(key: str) -> bool:
    return key in KEPT_POD_ANNOTATIONS or key.startswith(PREFIX)


def pod_of(
    obj: Mapping[str, Any], intern: Callable[[dict[str, str]], Mapping[str, str]] = dict
) -> PodInfo | None:
    """The cached record of a Pod, or None for a Pod with no secondary network.

    Such a Pod (no networks, Multus or multihome annotation) weighs on no decision:
    enrichment and IP capacity count attached networks only. The audit, which also
    looks at Pods a rule would now give networks to (MH015), reads every Pod itself.
    """
    annotations = object_field(object_field(obj, "metadata"), "annotations")
    if not any(_kept_annotation(k) for k in annotations):
        return None
    return pod_info(obj, intern=intern, keep=_kept_annotation)


def policy_of(obj: Mapping[str, Any]) -> bytes:
    """A NetworkPolicy as kept: its JSON text, without managedFields.

    Policies are read only by the reconciler's passes and the audit, once a pass; as
    text, 10,000 of them take a few MiB instead of tens as nested dicts.
    """
    metadata = {k: v for k, v in object_field(obj, "metadata").items() if k != "managedFields"}
    return json.dumps({**obj, "metadata": metadata}, separators=(",", ":")).encode()


class LiveState:
    """ClusterState fed by watches on the API server."""

    def __init__(
        self,
        api: KubeApi,
        *,
        watch_timeout: int = 300,
        lookup_timeout: float = 1.0,
        lookups_at_once: int = 4,
        miss_ttl: float = 5.0,
        clock: Clock = time.monotonic,
        network_policies: bool = True,
    ) -> None:
        """`network_policies` False: no watch on them (admission reads none; the controller does)."""
        self.api = api
        self.watches_policies = network_policies
        self.watch_timeout = watch_timeout
        self.lookup_timeout = lookup_timeout
        self.miss_ttl = miss_ttl
        self.clock = clock
        self._namespaces: Cache[Namespace] = Cache("namespaces", NAMESPACES_PATH, namespace_of, clock=clock)
        self._nads: Cache[NetworkAttachment] = Cache(
            "networkattachmentdefinitions", NADS_PATH, parse_network_attachment, clock=clock
        )
        self._rules: Cache[AttachmentRule | InvalidRule] = Cache(
            "attachmentrules", RULES_PATH, rule_of, clock=clock
        )
        intern = Interner()
        self._pods: Cache[PodInfo] = Cache(
            "pods", PODS_PATH, lambda obj: pod_of(obj, intern), metadata_only=True, clock=clock
        )
        self._policies: Cache[bytes] = Cache("networkpolicies", POLICIES_PATH, policy_of, clock=clock)
        self._rulebook = RuleBook([])
        self._rules.listeners.append(self._rebuild_rules)
        self._generation = 0
        self.add_listener(self._bump)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lookups = threading.BoundedSemaphore(lookups_at_once)
        self._misses: dict[str, float] = {}

    @property
    def caches(self) -> Sequence[Cache[Any]]:
        watched = (self._namespaces, self._nads, self._rules, self._pods)
        return (*watched, self._policies) if self.watches_policies else watched

    def start(self) -> LiveState:
        """Start one reflector thread per resource."""
        for cache in self.caches:
            reflector = Reflector(self.api, cache, self._stop, watch_timeout=self.watch_timeout)
            thread = threading.Thread(target=reflector.run, name=f"reflector-{cache.resource}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the reflectors (they finish their current read first)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from a reflector thread) after any change to the state."""
        for cache in self.caches:
            cache.listeners.append(callback)

    def _bump(self) -> None:
        self._generation += 1

    def generation(self) -> int:
        """Changes with every event, list and relist."""
        return self._generation

    def _rebuild_rules(self) -> None:
        self._rulebook = RuleBook(r for r in self._rules.values() if isinstance(r, AttachmentRule))

    def ready(self) -> bool:
        """True once every resource has been listed (or found not served)."""
        return all(cache.synced for cache in self.caches)

    def sources(self) -> Sequence[SourceStatus]:
        """Freshness of each cached resource."""
        return [cache.status() for cache in self.caches]

    def namespace(self, name: str) -> Namespace | None:
        """From the cache, else fetched once directly."""
        found = self._namespaces.get("", name)
        if found is None:
            obj = self._lookup(f"{NAMESPACES_PATH}/{name}")
            if obj is not None:
                return self._namespaces.add_if_absent(obj)
        return found

    def namespaces(self) -> Iterable[Namespace]:
        return self._namespaces.values()

    def nad(self, namespace: str, name: str) -> NetworkAttachment | None:
        """From the cache, else fetched once directly."""
        found = self._nads.get(namespace, name)
        if found is None and not self._nads.missing:
            obj = self._lookup(
                f"/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions/{name}"
            )
            if obj is not None:
                return self._nads.add_if_absent(obj)
        return found

    def nads(self) -> Iterable[NetworkAttachment]:
        return self._nads.values()

    def rulebook(self) -> RuleBook:
        return self._rulebook

    def location(self, kind: str, namespace: str, name: str) -> str:
        """Objects of a live cluster come from no file."""
        del kind, namespace, name
        return ""

    def invalid_rules(self) -> Sequence[InvalidRule]:
        return [r for r in self._rules.values() if isinstance(r, InvalidRule)]

    def pods(self, namespace: str | None = None) -> Iterable[PodInfo]:
        """The Pods with secondary networks (the others are not kept)."""
        return self._pods.values(namespace)

    def all_pods(self) -> Iterator[PodInfo]:
        """Every Pod, read from the API server in pages (metadata only), kept nowhere."""
        for page, _ in self.api.pages(PODS_PATH, metadata_only=True):
            for obj in page:
                yield pod_info(obj, keep=_kept_annotation)

    def network_policies(self, namespace: str | None = None) -> Iterator[Mapping[str, Any]]:
        """Decoded one at a time as the caller goes: each gets objects of its own."""
        return (json.loads(text) for text in self._policies.values(namespace))

    def counts(self) -> Mapping[str, int]:
        return {cache.resource: len(cache) for cache in self.caches}

    def _lookup(self, path: str) -> dict[str, Any] | None:
        if not self.ready():
            return None
        now = self.clock()
        if self._misses.get(path, 0.0) > now:
            return None
        if not self._lookups.acquire(blocking=False):
            return None  # enough lookups in flight: decide on the cache rather than queue
        try:
            obj = self.api.get(path, timeout=self.lookup_timeout)
        except ApiError as err:
            log.warning("direct lookup failed", extra={"path": path, "error": str(err)})
            obj = None
        finally:
            self._lookups.release()
        if obj is None:
            if len(self._misses) > 10_000:
                self._misses = {k: t for k, t in self._misses.items() if t > now}
            self._misses[path] = now + self.miss_ttl
        return obj
