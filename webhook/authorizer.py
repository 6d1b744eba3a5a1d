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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from webhook.kube import ApiError, KubeApi

LABEL_VERB: Final = "label"
LABEL_GROUP: Final = "multihome.io"
LABEL_RESOURCE: Final = "namespaces"
SUBJECT_ACCESS_REVIEWS: Final = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
CACHE_SECONDS: Final = 5.0
CACHE_ENTRIES: Final = 1024


@dataclass(frozen=True)
class Subject:
    """The requesting user as the AdmissionReview's userInfo gives it."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_user_info(cls, user: Mapping[str, object]) -> Subject:
        """From `request.userInfo` (already checked by the review decoder)."""
        groups = user.get("groups")
        extra = user.get("extra")
        return cls(
            username=str(user.get("username") or ""),
            groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
            uid=str(user.get("uid") or ""),
            extra=tuple(
                sorted(
                    (str(k), tuple(str(x) for x in v))
                    for k, v in (extra.items() if isinstance(extra, dict) else ())
                    if isinstance(v, list)
                )
            ),
        )


@dataclass(frozen=True)
class Verdict:
    """The authorizer's answer; `error` when it could not be asked."""

    allowed: bool
    reason: str = ""
    error: str = ""


class Authorizer(Protocol):
    """Answers whether a subject may change `multihome.io/` labels on a namespace."""

    def may_label(self, subject: Subject, namespace: str) -> Verdict:
        """Allowed, refused, or not known (`error`)."""
        ...


class NoAuthorizer:
    """File state has no API server to ask: only the static `--label-admins` decide."""

    def may_label(self, subject: Subject, namespace: str) -> Verdict:
        del subject, namespace
        return Verdict(False, error="no API server to ask (file state): only --label-admins apply")


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


def principals_text(principals: Sequence[object]) -> str:
    """The static label admins as a user reads them: `none` when there are none."""
    return ", ".join(str(p) for p in principals) or "none"
