"""The SubjectAccessReview the namespace webhook sends, its cache, and an authorizer that is away.

The API server here is a recorder of writes (tests/fakes.py); the real authorizer answers
the same review in the real-control-plane tier (tests/envtest/test_chart_installed.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import WriteRecorder
from webhook.cluster.authorizer import SUBJECT_ACCESS_REVIEWS, SubjectAccessReviewer, label_review
from webhook.cluster.kube import ApiError
from webhook.decisions.label_rights import Subject

ALICE = Subject.from_user_info(
    {
        "username": "alice",
        "uid": "u-1",
        "groups": ["platform", "system:authenticated"],
        "extra": {"arn": ["a"]},
    }
)


def allow_platform(method: str, path: str, body: Any) -> dict[str, Any]:
    allowed = "platform" in body["spec"]["groups"]
    return {
        **body,
        "status": {"allowed": allowed, "reason": "RBAC: allowed by ClusterRoleBinding" if allowed else ""},
    }


def test_the_review_asks_for_verb_label_on_the_namespace_with_the_whole_user() -> None:
    assert label_review(ALICE, "team-a") == {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "alice",
            "groups": ["platform", "system:authenticated"],
            "resourceAttributes": {
                "group": "multihome.io",
                "resource": "namespaces",
                "verb": "label",
                "name": "team-a",
            },
            "uid": "u-1",
            "extra": {"arn": ["a"]},
        },
    }


def test_answers_are_cached_for_a_few_seconds() -> None:
    api, now = WriteRecorder(answer=allow_platform), [100.0]
    reviewer = SubjectAccessReviewer(api, ttl=5.0, clock=lambda: now[0])
    assert reviewer.may_label(ALICE, "team-a").allowed
    assert reviewer.may_label(ALICE, "team-a").allowed
    assert [(m, p) for m, p, _ in api.writes] == [("POST", SUBJECT_ACCESS_REVIEWS)]
    bob = Subject("bob", ("dev",))
    assert not reviewer.may_label(bob, "team-a").allowed
    assert reviewer.may_label(ALICE, "team-b").allowed
    assert len(api.writes) == 3, "each user and namespace is its own question"
    now[0] += 5.0
    reviewer.may_label(ALICE, "team-a")
    assert len(api.writes) == 4, "asked again once the answer is old"


def test_the_cache_is_bounded() -> None:
    api = WriteRecorder(answer=allow_platform)
    reviewer = SubjectAccessReviewer(api, entries=2)
    for name in ("a", "b", "c", "a"):
        reviewer.may_label(ALICE, name)
    assert len(api.writes) == 4, "the oldest answer made room"


@pytest.mark.parametrize(
    ("refuse", "says"),
    [
        (
            ApiError(0, "POST /apis/...: ConnectTimeoutError"),
            "could not be asked (POST /apis/...: ConnectTimeoutError)",
        ),
        (
            ApiError(403, "subjectaccessreviews is forbidden"),
            "could not be asked (403: subjectaccessreviews is forbidden)",
        ),
    ],
)
def test_an_authorizer_that_cannot_be_asked_is_an_error_and_not_remembered(
    refuse: ApiError, says: str
) -> None:
    api = WriteRecorder(refuse=refuse)
    reviewer = SubjectAccessReviewer(api)
    verdict = reviewer.may_label(ALICE, "team-a")
    assert not verdict.allowed
    assert says in verdict.error
    api.refuse = None
    api.answer = allow_platform
    assert reviewer.may_label(ALICE, "team-a").allowed


def test_a_denied_answer_is_a_refusal_even_if_allowed_is_set() -> None:
    api = WriteRecorder(answer=lambda m, p, b: {"status": {"allowed": True, "denied": True}})
    assert not SubjectAccessReviewer(api).may_label(ALICE, "x").allowed
