"""The reconciler: existing NetworkPolicies follow their secondary networks.

Admission enriches a policy when it is written; the reconciler re-enriches policies
already in the cluster when what they depend on changes (NADs, rules, namespace
labels, Pods). It runs on the leader only (a Lease), at most one pass every
`min_interval` seconds, writes at most `writes_per_second`, and patches only the
policies whose enrichment is missing or stale, with the resourceVersion it read, so
a concurrent edit wins and is enriched on the next pass. Where the cluster serves
MultiNetworkPolicy, it also keeps one companion per enriched policy.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from policies.controllers.events import EventRecorder, EventType, object_reference
from policies.enrich import PodNetworks, companion_policy, enrich_policy
from webhook.cluster.kube import ApiError, KubeApi
from webhook.decisions.snapshot import ClusterState
from webhook.decisions.wording import plural
from webhook.multus.annotations import ENRICHMENT
from webhook.multus.json_types import object_field, string_map
from webhook.telemetry.memory import release_memory

log = logging.getLogger("multihome.reconcile")

MNP_PATH: Final = "/apis/k8s.cni.cncf.io/v1beta1/multi-networkpolicies"
COMPANION_LABEL: Final = "app.kubernetes.io/managed-by=multihome"


@dataclass
class PassReport:
    """What one reconcile pass did."""

    policies: int = 0
    patched: int = 0
    companions_written: int = 0
    companions_deleted: int = 0
    errors: int = 0
    seconds: float = 0.0


def policy_path(namespace: str, name: str) -> str:
    return f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"


def companion_path(namespace: str, name: str = "") -> str:
    base = f"/apis/k8s.cni.cncf.io/v1beta1/namespaces/{namespace}/multi-networkpolicies"
    return f"{base}/{name}" if name else base


def _enrichment_of(policy: Mapping[str, Any]) -> tuple[object, str | None]:
    annotations = string_map(object_field(policy, "metadata").get("annotations"))
    return policy.get("spec"), annotations.get(ENRICHMENT)


class Reconciler:
    """Brings every policy in the state to its enrichment, through the API server."""

    def __init__(
        self,
        state: ClusterState,
        api: KubeApi,
        *,
        dry_run: bool = False,
        writes_per_second: float = 20.0,
        min_interval: float = 5.0,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        events: EventRecorder | None = None,
    ) -> None:
        self.state, self.api, self.dry_run = state, api, dry_run
        self.events = events
        self.write_interval = 1.0 / writes_per_second
        self.min_interval = min_interval
        self.is_leader = is_leader
        self.clock = clock
        self.changed = threading.Event()
        self._stop = threading.Event()
        self._last_write = 0.0

    def reconcile_once(self) -> PassReport:
        """One pass over every policy; never raises for one object's failure."""
        started = self.clock()
        report = PassReport()
        # Companions as JSON text: at 10,000 policies, two maps of nested dicts were most
        # of a pass's memory.
        desired: dict[tuple[str, str], bytes] = {}
        existing = self._existing_companions()
        networks = PodNetworks(self.state)
        for policy in self.state.network_policies():
            report.policies += 1
            enrichment = enrich_policy(policy, self.state, networks)
            if _enrichment_of(enrichment.policy) != _enrichment_of(policy):
                report.patched += self._patch(policy, enrichment.policy, report)
            if existing is not None:
                companion = companion_policy(enrichment, policy)
                if companion is not None:
                    metadata = companion["metadata"]
                    desired[(metadata["namespace"], metadata["name"])] = _text(companion)
        if existing is not None:
            self._sync_companions(desired, existing, report)
        del networks, desired, existing
        release_memory()
        report.seconds = self.clock() - started
        log.info("reconcile pass", extra={**vars(report), "dry_run": self.dry_run})
        return report

    def _throttle(self) -> None:
        wait = self._last_write + self.write_interval - self.clock()
        if wait > 0:
            self._stop.wait(wait)
        self._last_write = self.clock()

    def _patch(self, current: Mapping[str, Any], enriched: Mapping[str, Any], report: PassReport) -> int:
        metadata = object_field(current, "metadata")
        namespace, name = str(metadata.get("namespace") or "default"), str(metadata.get("name") or "")
        record = _enrichment_of(enriched)[1]
        if self.dry_run:
            log.info(
                "would patch NetworkPolicy",
                extra={"namespace": namespace, "policy": name, "enriched": record is not None},
            )
            return 1
        patch = {
            "metadata": {
                "resourceVersion": metadata.get("resourceVersion"),
                "annotations": {ENRICHMENT: record},
            },
            "spec": enriched.get("spec"),
        }
        self._throttle()
        try:
            self.api.write(
                "PATCH", policy_path(namespace, name), patch, content_type="application/merge-patch+json"
            )
        except ApiError as err:
            report.errors += 1
            log.warning(
                "patch failed; next pass retries",
                extra={"namespace": namespace, "policy": name, "error": str(err)},
            )
            self._event(current, "Warning", "EnrichmentFailed", "Enrich", f"cannot patch the policy: {err}")
            return 0
        if record is None:
            note = "removed what multihome had added: no secondary network applies any more"
            self._event(current, "Normal", "EnrichmentRemoved", "Enrich", note)
        else:
            peers, rules = _counts(record)
            note = f"added {plural(peers, 'ipBlock peer')} and {plural(rules, 'rule')} for the ports of secondary networks"
            self._event(current, "Normal", "Enriched", "Enrich", note)
        return 1

    def _event(
        self, policy: Mapping[str, Any], type_: EventType, reason: str, action: str, note: str
    ) -> None:
        if self.events is not None:
            self.events.record(
                object_reference(policy, "networking.k8s.io/v1", "NetworkPolicy"), type_, reason, action, note
            )

    def _existing_companions(self) -> dict[tuple[str, str], bytes] | None:
        """Companions we manage now, or None where the cluster has no MultiNetworkPolicy CRD."""
        try:
            items, _ = self.api.list(f"{MNP_PATH}?labelSelector={COMPANION_LABEL}")
        except ApiError as err:
            if err.status != 404:
                log.warning("cannot list MultiNetworkPolicies", extra={"error": str(err)})
            return None
        return {
            (
                str(object_field(i, "metadata").get("namespace")),
                str(object_field(i, "metadata").get("name")),
            ): _text(i)
            for i in items
        }

    def _sync_companions(
        self,
        desired: Mapping[tuple[str, str], bytes],
        existing: Mapping[tuple[str, str], bytes],
        report: PassReport,
    ) -> None:
        """Create or update the companions that differ, delete those no policy wants any more."""
        for key, text in desired.items():
            companion = json.loads(text)
            current = json.loads(existing[key]) if key in existing else None
            if current is not None and _same_companion(current, companion):
                continue
            if self.dry_run:
                log.info("would write MultiNetworkPolicy", extra={"namespace": key[0], "policy": key[1]})
                continue
            self._write_companion(key, companion, current, report)
        if not self.dry_run:
            for key in existing.keys() - desired.keys():
                self._delete_companion(key, json.loads(existing[key]), report)

    def _write_companion(
        self,
        key: tuple[str, str],
        companion: dict[str, Any],
        current: Mapping[str, Any] | None,
        report: PassReport,
    ) -> None:
        self._throttle()
        try:
            if current is None:
                self.api.write("POST", companion_path(key[0]), companion)
                self._event(
                    _owner(companion, key),
                    "Normal",
                    "CompanionCreated",
                    "Enrich",
                    f"created MultiNetworkPolicy {key[0]}/{key[1]} for the secondary networks",
                )
            else:
                version = object_field(current, "metadata").get("resourceVersion")
                body = {**companion, "metadata": {**companion["metadata"], "resourceVersion": version}}
                self.api.write("PUT", companion_path(*key), body)
            report.companions_written += 1
        except ApiError as err:
            report.errors += 1
            log.warning(
                "companion write failed", extra={"namespace": key[0], "policy": key[1], "error": str(err)}
            )

    def _delete_companion(
        self, key: tuple[str, str], companion: Mapping[str, Any], report: PassReport
    ) -> None:
        self._throttle()
        try:
            self.api.write("DELETE", companion_path(*key), None)
            report.companions_deleted += 1
            self._event(
                _owner(companion, key),
                "Normal",
                "CompanionDeleted",
                "Enrich",
                f"deleted MultiNetworkPolicy {key[0]}/{key[1]}: the policy no longer covers secondary networks",
            )
        except ApiError as err:
            if err.status != 404:
                report.errors += 1

    def run(self, resync: float = 300.0) -> None:
        """Pass whenever the state changed, and every `resync` seconds.

        Between passes it waits `min_interval`, or as long as the last pass took if that
        was longer: with Pods changing all the time on a large cluster, passing back to
        back would take a whole core from the admissions this process also serves.
        """
        next_resync = self.clock()
        last_pass = 0.0
        while not self._stop.is_set():
            self.changed.wait(timeout=max(0.0, next_resync - self.clock()))
            if self._stop.is_set():
                return
            if self.is_leader() and self.state.ready():  # never un-enrich against a half-read cluster
                self.changed.clear()
                started = self.clock()
                try:
                    self.reconcile_once()
                except Exception as err:  # the loop outlives one bad pass
                    log.error("reconcile pass failed", exc_info=err)
                last_pass = self.clock() - started
                next_resync = self.clock() + resync
            self._stop.wait(max(self.min_interval, last_pass))

    def start(self) -> Reconciler:
        threading.Thread(target=self.run, name="reconciler", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.changed.set()


def _text(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _same_companion(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    current_meta, desired_meta = object_field(current, "metadata"), object_field(desired, "metadata")
    return (
        current.get("spec") == desired.get("spec")
        and string_map(current_meta.get("annotations")).items()
        >= string_map(desired_meta.get("annotations")).items()
    )


def _counts(record: str) -> tuple[int, int]:
    """(ipBlock peers, port rules) an enrichment record says were added (either version)."""
    try:
        data = json.loads(record)
    except ValueError:
        return 0, 0
    if not isinstance(data, dict):
        return 0, 0

    def count(summary: object) -> int:
        if data.get("v") == 1:
            return len(summary) if isinstance(summary, list) else 0
        return summary[0] if isinstance(summary, list) and summary and isinstance(summary[0], int) else 0

    peers = sum(
        count(summary)
        for by_index in (data.get("peers") or {}).values()
        if isinstance(by_index, dict)
        for summary in by_index.values()
    )
    rules = sum(count(summary) for summary in (data.get("rules") or {}).values())
    return peers, rules


def _owner(companion: Mapping[str, Any], key: tuple[str, str]) -> dict[str, Any]:
    """The NetworkPolicy a companion belongs to, as a `metadata` for an Event's `regarding`."""
    owners = object_field(companion, "metadata").get("ownerReferences")
    owner = owners[0] if isinstance(owners, list) and owners and isinstance(owners[0], dict) else {}
    name = str(owner.get("name") or key[1].removesuffix("-multihome"))
    return {
        "metadata": {"namespace": key[0], "name": name, **({"uid": owner["uid"]} if owner.get("uid") else {})}
    }
