"""`enrich FILE...`: enrich (or un-enrich) the NetworkPolicies in manifest files.

Files are read and written with ruamel.yaml's round trip, and only the nodes that
change are replaced, so comments, key order and quoting of everything else survive
`-i`. This is how a GitOps repository is enriched before it reaches a cluster.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from policies.enrich import PodNetworks, companion_policy, enrich_policy, remove_enrichment
from webhook.cluster.files import StateError
from webhook.decisions.snapshot import ClusterState


@dataclass
class FileResult:
    """One file, enriched: its new text and what happened."""

    path: Path
    text: str
    changed: int = 0
    policies: int = 0
    companions: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # the enrichment record is one long line; folding it helps no one
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def enrich_file(
    path: Path,
    state: ClusterState,
    *,
    remove: bool = False,
    companions: bool = False,
    networks: PodNetworks | None = None,
) -> FileResult:
    """Enrich every NetworkPolicy in `path`; other documents pass through untouched."""
    yaml = _yaml()
    try:
        text = path.read_text(encoding="utf-8")
        documents = list(yaml.load_all(text))
    except (OSError, UnicodeDecodeError) as err:
        raise StateError(f"{path}: cannot be read: {err}") from None
    except YAMLError as err:
        raise StateError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    result = FileResult(path, text)
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") != "NetworkPolicy":
            continue
        result.policies += 1
        plain = json.loads(json.dumps(document))
        if remove:
            updated, warnings = remove_enrichment(plain)
        else:
            networks = networks or PodNetworks(state)
            enrichment = enrich_policy(plain, state, networks)
            updated, warnings = enrichment.policy, enrichment.warnings
            companion = companion_policy(enrichment, plain) if companions else None
            if companion is not None:
                result.companions.append(companion)
        result.warnings += [f"{path}: {w}" for w in warnings]
        if updated != plain:
            update_in_place(document, updated)
            result.changed += 1
    if result.changed:
        out = io.StringIO()
        yaml.dump_all(documents, out)
        result.text = out.getvalue()
    return result


def update_in_place(node: Any, new: Any) -> Any:
    """Make `node` equal to `new`, keeping every unchanged sub-node (and its comments)."""
    if isinstance(node, dict) and isinstance(new, dict):
        for key in [k for k in node if k not in new]:
            del node[key]
        for key, value in new.items():
            if key in node and _same_shape(node[key], value):
                update_in_place(node[key], value)
            elif key not in node or node[key] != value:
                node[key] = value
        return node
    if isinstance(node, list) and isinstance(new, list):
        for index, value in enumerate(new[: len(node)]):
            if _same_shape(node[index], value):
                update_in_place(node[index], value)
            elif node[index] != value:
                node[index] = value
        node.extend(new[len(node) :])
        del node[len(new) :]
        return node
    return new


def _same_shape(a: object, b: object) -> bool:
    return (isinstance(a, dict) and isinstance(b, dict)) or (isinstance(a, list) and isinstance(b, list))


def dump_documents(documents: Sequence[dict[str, Any]]) -> str:
    """Plain objects as a YAML stream."""
    out = io.StringIO()
    _yaml().dump_all(list(documents), out)
    return out.getvalue()
