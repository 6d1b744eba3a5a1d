"""Who may change `multihome.io/` namespace labels: the API server's own authorizer decides.

As Kubernetes decides its custom rights (CSR `approve` on signers, cert-manager's `approve`
on issuers): a user may when a SubjectAccessReview for verb `label`, group `multihome.io`,
resource `namespaces`, name = the namespace, is allowed. cluster-admin bindings, EKS access
entries and ClusterRoles with `resourceNames` then work unchanged. Answers are cached for a
few seconds, keyed by everything the review carries; the one admission path that waits on
the API server, and only when such a label changes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from webhook.cluster.kube import ApiError, KubeApi
from webhook.decisions.label_rights import LABEL_GROUP, LABEL_RESOURCE, LABEL_VERB, Subject, Verdict

SUBJECT_ACCESS_REVIEWS: Final = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
CACHE_SECONDS: Final = 5.0
CACHE_ENTRIES: Final = 1024


def label_review(subject: Subject, namespace: str) -> dict[str, object]:
    """The SubjectAccessReview asking whether `subject` may label `namespace`."""
    spec: dict[str, object] = {
        "user": subject.username,
        "groups": list(subject.groups),
        "resourceAttributes": {
            "group": LABEL_GROUP,
            "resource": LABEL_RESOURCE,
            "verb": LABEL_VERB,
            "name": namespace,
        },
    }
    if subject.uid:
        spec["uid"] = subject.uid
    if subject.extra:
        spec["extra"] = {key: list(values) for key, values in subject.extra}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


class SubjectAccessReviewer:
    """Asks the API server with a SubjectAccessReview; answers cached `ttl` seconds."""

    def __init__(
        self,
        api: KubeApi,
        *,
        ttl: float = CACHE_SECONDS,
        entries: int = CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.ttl = ttl
        self.entries = entries
        self.clock = clock
        self._cache: OrderedDict[tuple[Subject, str], tuple[float, Verdict]] = OrderedDict()
        self._lock = threading.Lock()

    def may_label(self, subject: Subject, namespace: str) -> Verdict:
        key = (subject, namespace)
        now = self.clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and now - cached[0] < self.ttl:
                return cached[1]
        verdict = self._ask(subject, namespace)
        if not verdict.error:  # an unreachable authorizer is asked again next time
            with self._lock:
                self._cache[key] = (now, verdict)
                self._cache.move_to_end(key)
                while len(self._cache) > self.entries:
                    self._cache.popitem(last=False)
        return verdict

    def _ask(self, subject: Subject, namespace: str) -> Verdict:
        try:
            answer = self.api.write("POST", SUBJECT_ACCESS_REVIEWS, label_review(subject, namespace))
        except ApiError as err:
            return Verdict(False, error=f"the API server's authorizer could not be asked ({err})")
        status = answer.get("status")
        if not isinstance(status, dict):
            return Verdict(False, error="the SubjectAccessReview came back without a status")
        reason = str(status.get("reason") or status.get("evaluationError") or "")
        return Verdict(bool(status.get("allowed")) and not status.get("denied"), reason)
