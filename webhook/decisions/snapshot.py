"""What decisions read of the cluster: the snapshot's interface and its records.

`ClusterState` is a read-only, in-memory view. The files (`webhook.cluster.files`)
and the live cluster (`webhook.cluster.live`) both implement it; decisions, the
audit and the controllers read only this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from webhook.multus.annotations import IGNORE
from webhook.multus.json_types import object_field, string_map
from webhook.multus.nad import NetworkAttachment
from webhook.rules import RuleBook


@dataclass(frozen=True)
class Namespace:
    """A namespace and its labels."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def ignored(self) -> bool:
        """True when labelled `multihome.io/ignore=true`: the webhooks leave it alone."""
        return self.labels.get(IGNORE) == "true"


@dataclass(frozen=True)
class PodInfo:
    """What decisions need of a Pod or a workload's Pod template."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    host_network: bool = False
    owner: str = ""  # "Deployment/name" for a template; "" for a Pod
    # Pods a template stands for: spec.replicas, or a Job's parallelism; 1 for a Pod and
    # for a DaemonSet (one per node, and the nodes are not in the state).
    replicas: int = 1
    node: str = ""  # spec.nodeName, once scheduled
    uid: str = ""  # metadata.uid: tells a Pod from an earlier one of the same name

    @property
    def ref(self) -> str:
        """How people name it: `Pod ns/name` or `Deployment ns/name`."""
        kind, _, name = self.owner.partition("/")
        return f"{kind or 'Pod'} {self.namespace}/{name or self.name}"


@dataclass(frozen=True)
class SourceStatus:
    """How fresh one watched resource is."""

    resource: str
    synced: bool
    missing: bool
    objects: int
    last_event_age: float | None
    relists: int
    errors: int
    # False while the last list or watch attempt failed: answers come from the last state.
    watching: bool = True
    # The last failed list's status (0: not reached) and message, until a list succeeds.
    error_status: int | None = None
    error: str = ""


@dataclass(frozen=True)
class InvalidRule:
    """An AttachmentRule that does not compile: skipped by inject, reported by audit."""

    name: str
    error: str


class ClusterState(Protocol):
    """What decisions read of the cluster: a consistent, in-memory view."""

    def ready(self) -> bool:
        """True once the state holds the whole cluster (or directory)."""
        ...

    def namespace(self, name: str) -> Namespace | None:
        """The namespace called `name`, if known."""
        ...

    def namespaces(self) -> Iterable[Namespace]:
        """Every namespace."""
        ...

    def nad(self, namespace: str, name: str) -> NetworkAttachment | None:
        """The NetworkAttachmentDefinition `namespace/name`, if it exists."""
        ...

    def nads(self) -> Iterable[NetworkAttachment]:
        """Every NetworkAttachmentDefinition."""
        ...

    def rulebook(self) -> RuleBook:
        """The valid AttachmentRules, compiled and indexed."""
        ...

    def invalid_rules(self) -> Sequence[InvalidRule]:
        """AttachmentRules that do not compile."""
        ...

    def pods(self, namespace: str | None = None) -> Iterable[PodInfo]:
        """Pods and workload Pod templates, in one namespace or all.

        A live state keeps only the Pods with secondary networks (or multihome's or
        Multus' annotations): the others weigh on no decision.
        """
        ...

    def all_pods(self) -> Iterable[PodInfo]:
        """Every Pod and template, for the audit: read from the API server when not all kept."""
        ...

    def network_policies(self, namespace: str | None = None) -> Iterable[Mapping[str, Any]]:
        """NetworkPolicy objects, in one namespace or all."""
        ...

    def counts(self) -> Mapping[str, int]:
        """Objects held, by kind: for metrics and logs."""
        ...

    def sources(self) -> Sequence[SourceStatus]:
        """How fresh each watched resource is; empty for state that does not change."""
        ...

    def generation(self) -> int:
        """A number that changes whenever anything in the state does: for derived caches."""
        ...

    def location(self, kind: str, namespace: str, name: str) -> str:
        """Where the object was read from (`file:line`); "" for a live cluster."""
        ...


def pod_info(
    obj: Mapping[str, Any],
    namespace: str = "",
    owner: str = "",
    replicas: int = 1,
    *,
    intern: Callable[[dict[str, str]], Mapping[str, str]] = dict,
    keep: Callable[[str], bool] | None = None,
) -> PodInfo:
    """The parts of a Pod (or a workload's Pod template) that decisions read.

    `namespace` stands in when the object has none (a template); `intern` shares equal
    label maps between records; `keep` chooses the annotations kept (all by default).
    """
    metadata, spec = object_field(obj, "metadata"), object_field(obj, "spec")
    annotations = string_map(metadata.get("annotations"))
    return PodInfo(
        namespace=str(metadata.get("namespace") or namespace),
        name=str(metadata.get("name") or metadata.get("generateName") or owner.partition("/")[2]),
        labels=intern(string_map(metadata.get("labels"))),
        annotations=annotations if keep is None else {k: v for k, v in annotations.items() if keep(k)},
        host_network=spec.get("hostNetwork") is True,
        owner=owner,
        replicas=replicas,
        node=str(spec.get("nodeName") or ""),
        uid=str(metadata.get("uid") or ""),
    )
