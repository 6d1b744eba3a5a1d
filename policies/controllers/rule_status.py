"""AttachmentRule status: whether each rule works, kept by the leader.

`kubectl get attachmentrules` then answers "is my rule working": a `Ready` condition (True,
or False with `InvalidSpec`, `VpcCniReference` or `NetworkMissing` and a message naming what
is wrong) and how many namespaces the rule selects. `rule_status` is a pure function of the
rule and the state; `sync_rule_status` writes what changed through the status subresource.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from policies.controllers.events import EventRecorder, object_reference
from webhook.cluster.kube import ApiError, KubeApi
from webhook.cluster.live import RULES_PATH
from webhook.decisions.checks import CHECKS
from webhook.decisions.issues import Issue, invalid_rule_issue, rule_issues
from webhook.decisions.snapshot import ClusterState
from webhook.decisions.wording import plural
from webhook.multus.annotations import RULE_KIND
from webhook.multus.json_types import object_field
from webhook.rules import parse_rule

log = logging.getLogger("multihome.rule_status")

READY: Final = "Ready"


def utc_now() -> str:
    """RFC 3339 seconds in UTC, as the API's timestamps are."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rule_status(obj: Mapping[str, Any], state: ClusterState, now: str) -> dict[str, Any]:
    """The status an AttachmentRule object should have in `state`.

    lastTransitionTime is kept from the current status while the condition's status holds.
    """
    metadata = object_field(obj, "metadata")
    generation = metadata.get("generation") if isinstance(metadata.get("generation"), int) else 0
    matched = 0
    try:
        rule = parse_rule({"apiVersion": "multihome.io/v1alpha1", "kind": RULE_KIND, **obj})
    except ValueError as err:
        ready, reason, message = "False", "InvalidSpec", invalid_rule_issue(str(err)).text()
    else:
        namespaces = [
            n for n in state.namespaces() if not n.ignored and rule.namespace_selector.matches(n.labels)
        ]
        matched = len(namespaces)
        issues = list(rule_issues(rule, state, namespaces))
        vpc_cni = [i for i in issues if i.check == "MH021"]
        missing = [i for i in issues if i.check == "MH022"]
        if vpc_cni:
            ready, reason, message = "False", "VpcCniReference", _said(vpc_cni)
        elif missing:
            ready, reason, message = "False", "NetworkMissing", _said(missing)
        else:
            keys = {network.key for _, network in rule.given_networks([n.name for n in namespaces])}
            ready, reason = "True", "Ready"
            message = f"gives {plural(len(keys), 'network')} in {plural(matched, 'namespace')}"
    conditions = object_field(obj, "status").get("conditions")
    found = [c for c in conditions if isinstance(c, dict)] if isinstance(conditions, list) else []
    previous = next((c for c in found if c.get("type") == READY), {})
    since = previous.get("lastTransitionTime") if previous.get("status") == ready else None
    condition = {
        "type": READY,
        "status": ready,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since or now,
    }
    return {"observedGeneration": generation, "matchedNamespaces": matched, "conditions": [condition]}


def _said(issues: list[Issue]) -> str:
    """Issues of one check as one condition message: the ID once, each what, the fix once."""
    check = issues[0].check
    return f"{check} {CHECKS[check].name}: {'; '.join(i.message for i in issues)}; {issues[0].fix}"


def sync_rule_status(
    api: KubeApi,
    state: ClusterState,
    now: Callable[[], str] = utc_now,
    events: EventRecorder | None = None,
) -> int:
    """Write the status of every rule whose status differs; returns how many were written.

    A rule that turns not Ready (or not Ready for another reason) also gets a Warning Event.
    """
    try:
        rules, _ = api.list(RULES_PATH)
    except ApiError as err:
        if err.status == 404:
            return 0  # the CRD is not installed
        raise
    written = 0
    for obj in rules:
        desired = rule_status(obj, state, now())
        if obj.get("status") == desired:
            continue
        condition = desired["conditions"][0]
        if condition["status"] == "False" and _ready_of(obj) != ("False", condition["reason"]) and events:
            reference = object_reference(obj, "multihome.io/v1alpha1", RULE_KIND)
            events.record(reference, "Warning", condition["reason"], "Validate", condition["message"])
        name = str(object_field(obj, "metadata").get("name") or "")
        try:
            api.write(
                "PATCH",
                f"{RULES_PATH}/{name}/status",
                {"status": desired},
                content_type="application/merge-patch+json",
            )
            written += 1
        except ApiError as err:
            if err.status != 404:  # deleted meanwhile
                log.warning("cannot write AttachmentRule status", extra={"rule": name, "error": str(err)})
    return written


def _ready_of(obj: Mapping[str, Any]) -> tuple[object, object]:
    """(status, reason) of the Ready condition an object has now."""
    conditions = object_field(obj, "status").get("conditions")
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, dict) and condition.get("type") == READY:
            return condition.get("status"), condition.get("reason")
    return None, None
