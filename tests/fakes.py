"""Fakes for the parts that cannot run in a unit test, each implementing the real interface.

The real parts run in the real-control-plane tier (tests/envtest): the API server's
authorizer answers SubjectAccessReviews there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.cluster.kube import ApiError, Page
from webhook.decisions.label_rights import Subject, Verdict


@dataclass
class FakeAuthorizer:
    """The API server's authorizer for namespace labels: who may label where ("*": anywhere)."""

    grants: Mapping[str, set[str]] = field(default_factory=dict)
    error: str = ""
    asked: list[tuple[str, str]] = field(default_factory=list)

    def may_label(self, subject: Subject, namespace: str) -> Verdict:
        self.asked.append((subject.username, namespace))
        if self.error:
            return Verdict(False, error=self.error)
        names = set().union(*(self.grants.get(p, set()) for p in (subject.username, *subject.groups)))
        return Verdict(bool(names & {namespace, "*"}), "RBAC: allowed" if names else "")


@dataclass
class WriteRecorder:
    """KubeApi whose writes are answered by `answer` and remembered, or refused with `refuse`."""

    answer: Callable[[str, str, Any], dict[str, Any]] = lambda method, path, body: {}
    refuse: ApiError | None = None
    writes: list[tuple[str, str, Any]] = field(default_factory=list)

    def write(
        self, method: str, path: str, body: object, *, content_type: str = "application/json"
    ) -> dict[str, Any]:
        del content_type
        if self.refuse is not None:
            raise self.refuse
        self.writes.append((method, path, body))
        return self.answer(method, path, body)

    def list(self, path: str, *, metadata_only: bool = False) -> tuple[list[dict[str, Any]], str]:
        raise AssertionError("the recorder never lists")

    def pages(self, path: str, *, metadata_only: bool = False, page_size: int = 500) -> Iterator[Page]:
        raise AssertionError("the recorder never lists")

    def watch(
        self, path: str, resource_version: str, *, timeout_seconds: int, metadata_only: bool = False
    ) -> Iterator[dict[str, Any]]:
        raise AssertionError("the recorder never watches")

    def get(self, path: str, *, timeout: float) -> dict[str, Any] | None:
        raise AssertionError("the recorder never reads")
