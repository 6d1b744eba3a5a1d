"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it.

A candidate takes the Lease when it does not exist or when its holder has not
renewed it for `lease_duration` seconds, and renews it every `retry_period` while it
holds it. Expiry is judged by our own clock from when we last saw the record
change, never by comparing clocks across machines. Writes carry the
resourceVersion read, so two candidates racing for an expired Lease cannot both
win: the loser gets 409 and stays a follower.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from webhook.cluster.kube import ApiError, KubeApi

log = logging.getLogger("multihome.lease")

Clock = Callable[[], float]
LEASE_DURATION: Final = 15.0
RETRY_PERIOD: Final = 2.0


def _micro_time(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """One candidate for the Lease `namespace/name`."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = LEASE_DURATION,
        retry_period: float = RETRY_PERIOD,
        clock: Clock = time.monotonic,
        on_change: Callable[[bool], None] = lambda _leader: None,
    ) -> None:
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.on_change = on_change
        self.lease_duration, self.retry_period, self.clock = lease_duration, retry_period, clock
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._leader_until = 0.0
        self._stop = threading.Event()

    @property
    def is_leader(self) -> bool:
        """True while we hold a Lease we renewed less than a lease duration ago."""
        return self.clock() < self._leader_until

    def try_acquire_or_renew(self) -> bool:
        """One round of the election; True when we hold the Lease afterwards."""
        now = self.clock()
        try:
            lease = self.api.get(self.path, timeout=self.retry_period)
            if lease is None:
                self.api.write("POST", self.path.rsplit("/", 1)[0], self._lease(None, transitions=0))
                return self._won(now)
            spec = lease.get("spec") or {}
            record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
            if record != self._observed:
                self._observed, self._observed_at = record, now
            holder = spec.get("holderIdentity")
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if holder and holder != self.identity and self._observed_at + duration > now:
                self._leader_until = 0.0
                return False
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
            self.api.write("PUT", self.path, self._lease(lease, transitions=transitions))
            return self._won(now)
        except ApiError as err:
            if err.status != 409:
                log.warning("lease election failed", extra={"lease": self.path, "error": str(err)})
            self._leader_until = 0.0 if err.status == 409 else self._leader_until
            return self.is_leader

    def _won(self, now: float) -> bool:
        self._leader_until = now + self.lease_duration
        return True

    def _lease(self, current: dict[str, Any] | None, *, transitions: int) -> dict[str, Any]:
        stamp = _micro_time(dt.datetime.now(dt.UTC))
        spec = dict((current or {}).get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = stamp
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=int(self.lease_duration),
            renewTime=stamp,
            leaseTransitions=transitions,
        )
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            metadata["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def run(self) -> None:
        """Campaign and renew until stopped."""
        was_leader = False
        while not self._stop.is_set():
            leader = self.try_acquire_or_renew()
            if leader != was_leader:
                log.info(
                    "leadership changed",
                    extra={"lease": self.path, "identity": self.identity, "leader": leader},
                )
                was_leader = leader
                self.on_change(leader)
            self._stop.wait(self.retry_period)

    def start(self) -> LeaseElector:
        threading.Thread(target=self.run, name="lease", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()


class LeaderLoop:
    """Runs `action` every `interval` seconds while `is_leader()`; an action that fails is logged, not fatal."""

    def __init__(
        self,
        name: str,
        action: Callable[[], object],
        *,
        is_leader: Callable[[], bool],
        interval: float,
        first_after: float | None = None,
    ) -> None:
        self.name, self.action, self.is_leader, self.interval = name, action, is_leader, interval
        self.first_after = interval if first_after is None else first_after
        self._stop = threading.Event()

    def run(self) -> None:
        delay = self.first_after
        while not self._stop.wait(delay):
            delay = self.interval
            if not self.is_leader():
                continue
            try:
                self.action()
            except Exception as err:
                log.error("leader task failed", exc_info=err, extra={"task": self.name})

    def start(self) -> LeaderLoop:
        threading.Thread(target=self.run, name=self.name, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
