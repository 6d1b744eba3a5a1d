"""Cluster state read from files: `FileState`, the `ClusterState` of a directory.

`FileState` builds the snapshot from a directory of YAML
manifests (any mix of kinds, multi-document files; workloads count through their
Pod templates); the live implementation, fed by watches on the API server, fits
the same interface. No admission decision waits on I/O: both hold everything in
memory with indexes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Self

import yaml

from webhook.decisions.snapshot import InvalidRule, Namespace, PodInfo, SourceStatus, pod_info
from webhook.multus.annotations import NAD_KIND, RULE_KIND
from webhook.multus.json_types import object_field, string_map
from webhook.multus.nad import NetworkAttachment, parse_network_attachment
from webhook.rules import AttachmentRule, RuleBook, parse_rule

# Kinds that carry a Pod template, and where it sits.
TEMPLATE_PATHS: Final[Mapping[str, tuple[str, ...]]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")
CLUSTER_SCOPED: Final = frozenset({"Namespace", RULE_KIND, "Node", "ClusterRole", "ClusterRoleBinding"})


class StateError(ValueError):
    """The state could not be read; the message names the file and the document."""


class FileState:
    """ClusterState read once from a directory of manifests."""

    def __init__(
        self, documents: Iterable[tuple[str, Mapping[str, Any]]], skipped: Sequence[str] = ()
    ) -> None:
        self.skipped: Sequence[str] = skipped  # what was read past, and why: one line per file
        self._locations: dict[tuple[str, str, str], str] = {}
        self._namespaces: dict[str, Namespace] = {}
        self._nads: dict[tuple[str, str], NetworkAttachment] = {}
        self._pods: dict[str, list[PodInfo]] = defaultdict(list)
        self._policies: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        self._invalid_rules: list[InvalidRule] = []
        self._manifests: list[Mapping[str, Any]] = []
        self._nodes: dict[str, str] = {}
        rules: list[AttachmentRule] = []
        for where, doc in documents:
            self._add(where, doc, rules)
        self._rulebook = RuleBook(rules)

    @classmethod
    def from_directory(cls, directory: Path, *, strict: bool = True) -> Self:
        """Read every .yaml, .yml and .json file under `directory`, recursively.

        Helm charts (a folder with Chart.yaml: templates are not manifests until rendered)
        and files that hold no Kubernetes objects are skipped, each named once in
        `skipped`. A file that is not valid YAML is a StateError when `strict` (a server
        must not start without part of its state), else skipped too (an audit goes on).
        """
        if not directory.is_dir():
            raise StateError(f"state directory {directory} does not exist or is not a directory")
        charts = sorted(p.parent for p in directory.rglob("Chart.yaml"))
        skipped = [
            f"{chart}: a Helm chart, skipped (render it first: helm template {chart} | multihome audit --state -)"
            for chart in charts
        ]
        paths = sorted(
            p
            for p in directory.rglob("*")
            if _is_manifest(p) and not any(p.is_relative_to(c) for c in charts)
        )
        return cls(_readable_manifests(paths, skipped, strict=strict), skipped)

    @classmethod
    def from_stream(cls, text: str, name: str = "<stdin>") -> Self:
        """Read a YAML stream (`kustomize build | multihome audit --state -`); StateError names the line."""
        return cls(_objects(name, _documents_in(name, text)))

    def location(self, kind: str, namespace: str, name: str) -> str:
        """`file:line` of the object, when it was read from one."""
        return self._locations.get((kind, namespace, name), "")

    def _add(self, where: str, doc: Mapping[str, Any], rules: list[AttachmentRule]) -> None:
        kind = doc.get("kind")
        metadata = object_field(doc, "metadata")
        name = str(metadata.get("name") or "")
        namespace = str(metadata.get("namespace") or "default")
        scoped = "" if kind in CLUSTER_SCOPED else namespace
        self._locations.setdefault((str(kind), scoped, name), where)
        if kind == "Namespace":
            self._namespaces[name] = Namespace(name, string_map(metadata.get("labels")))
        elif kind == NAD_KIND:
            nad = parse_network_attachment(doc)
            self._nads[nad.key] = nad
        elif kind == RULE_KIND:
            try:
                rules.append(parse_rule(doc))
            except ValueError as err:
                self._invalid_rules.append(InvalidRule(name, str(err)))  # where: state.location
        elif kind == "Pod":
            self._pods[namespace].append(pod_info(doc, namespace))
        elif kind in TEMPLATE_PATHS:
            self._manifests.append(doc)
            template = _dig(doc, TEMPLATE_PATHS[str(kind)])
            if isinstance(template, dict):
                info = pod_info(template, namespace, owner=f"{kind}/{name}", replicas=_replicas(doc))
                self._pods[namespace].append(info)
        elif kind == "NetworkPolicy":
            self._policies[namespace].append(doc)
        elif kind == "ConfigMap":
            self._manifests.append(doc)
        elif kind == "Node":
            self._nodes[name] = str(object_field(doc, "spec").get("providerID") or "")

    def nodes(self) -> Mapping[str, str]:
        """Node name to `spec.providerID`, for the Nodes the files hold (a `kubectl get nodes -o yaml` dump)."""
        return self._nodes

    def manifests(self) -> Sequence[Mapping[str, Any]]:
        """Workloads and ConfigMaps as written: what the audit reads beyond the state."""
        return self._manifests

    def ready(self) -> bool:
        """A directory is read whole before the state exists."""
        return True

    def namespace(self, name: str) -> Namespace | None:
        """The namespace called `name`, if the directory declares it."""
        return self._namespaces.get(name)

    def namespaces(self) -> Iterable[Namespace]:
        """Every declared namespace."""
        return self._namespaces.values()

    def nad(self, namespace: str, name: str) -> NetworkAttachment | None:
        """The NetworkAttachmentDefinition `namespace/name`, if declared."""
        return self._nads.get((namespace, name))

    def nads(self) -> Iterable[NetworkAttachment]:
        """Every NetworkAttachmentDefinition."""
        return self._nads.values()

    def rulebook(self) -> RuleBook:
        """The valid AttachmentRules."""
        return self._rulebook

    def invalid_rules(self) -> Sequence[InvalidRule]:
        """AttachmentRules that do not compile, with the file they came from."""
        return self._invalid_rules

    def pods(self, namespace: str | None = None) -> Iterable[PodInfo]:
        """Pods and workload Pod templates."""
        if namespace is not None:
            return list(self._pods.get(namespace, ()))
        return [p for pods in self._pods.values() for p in pods]

    def all_pods(self) -> Iterable[PodInfo]:
        """Every Pod and template: a file state keeps them all."""
        return self.pods()

    def network_policies(self, namespace: str | None = None) -> Iterable[Mapping[str, Any]]:
        """NetworkPolicy manifests."""
        if namespace is not None:
            return list(self._policies.get(namespace, ()))
        return [p for policies in self._policies.values() for p in policies]

    def counts(self) -> Mapping[str, int]:
        """Objects held, by kind."""
        return {
            "namespaces": len(self._namespaces),
            "networkattachmentdefinitions": len(self._nads),
            "attachmentrules": len(self._rulebook) + len(self._invalid_rules),
            "pods": sum(len(p) for p in self._pods.values()),
            "networkpolicies": sum(len(p) for p in self._policies.values()),
        }

    def sources(self) -> Sequence[SourceStatus]:
        """Files are read once: nothing to be fresh about."""
        return ()

    def generation(self) -> int:
        """Files are read once: the state never changes."""
        return 0


def _replicas(doc: Mapping[str, Any]) -> int:
    spec = object_field(doc, "spec")
    if doc.get("kind") == "CronJob":
        spec = object_field(object_field(spec, "jobTemplate"), "spec")
    count = spec.get("parallelism") if doc.get("kind") in ("Job", "CronJob") else spec.get("replicas")
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else 1


def iter_manifests(paths: Iterable[Path]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every object in `paths` with where it starts (`file:line`); `kind: List` is unpacked."""
    for path in paths:
        yield from _objects(str(path), _documents(path))


def _objects(
    name: str, documents: Iterable[tuple[int, object, yaml.Node]]
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for line, doc, node in documents:
        where = f"{name}:{line}"
        if not isinstance(doc, dict):
            raise StateError(f"{where}: document is a {type(doc).__name__}, not a manifest object")
        if str(doc.get("kind", "")).endswith("List"):
            lines = _item_lines(node)
            for item_index, item in enumerate(doc.get("items") or []):
                if isinstance(item, dict):
                    yield f"{name}:{lines.get(item_index, line)}", item
        else:
            yield where, doc


def _item_lines(node: yaml.Node) -> dict[int, int]:
    """The line each entry of a List's `items` starts on."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if (
                isinstance(key, yaml.ScalarNode)
                and key.value == "items"
                and isinstance(value, yaml.SequenceNode)
            ):
                return {i: item.start_mark.line + 1 for i, item in enumerate(value.value)}
    return {}


def _readable_manifests(
    paths: Iterable[Path], skipped: list[str], *, strict: bool
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The objects of each file that holds Kubernetes objects; the rest noted in `skipped`."""
    for path in paths:
        try:
            documents = list(_documents(path))
        except StateError as err:
            if strict:
                raise
            skipped.append(f"{err}; skipped")
            continue
        if documents and not any(_is_object(doc) for _, doc, _ in documents):
            skipped.append(f"{path}: holds no Kubernetes objects (no kind), skipped")
            continue
        yield from _objects(str(path), documents)


def _is_object(doc: object) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("kind"), str)


def _documents(path: Path) -> list[tuple[int, object, yaml.Node]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise StateError(f"{path}: cannot be read: {err}") from None
    return _documents_in(str(path), text)


def _documents_in(name: str, text: str) -> list[tuple[int, object, yaml.Node]]:
    """(line, object, node) of each non-empty document, the line where it starts."""
    found: list[tuple[int, object, yaml.Node]] = []
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # reads the first characters: may refuse them already
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = loader.construct_document(node)
            if doc is not None:
                found.append((node.start_mark.line + 1, doc, node))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        raise StateError(f"{where}: not valid YAML: {_yaml_problem(err)}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return found


def _yaml_problem(err: yaml.YAMLError) -> str:
    problem = getattr(err, "problem", None)
    return str(problem) if problem else str(err).splitlines()[0]


def _is_manifest(path: Path) -> bool:
    return path.is_file() and path.suffix in MANIFEST_SUFFIXES and not path.name.startswith(".")


def _dig(obj: Mapping[str, Any], path: Sequence[str]) -> object:
    current: object = obj
    for key in path:
        if not isinstance(current, dict):
            return None
        current = current.get(key)
    return current
