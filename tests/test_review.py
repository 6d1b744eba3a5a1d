"""AdmissionReview decoding and the responses built from decisions."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import make_request, make_review, pod
from webhook.admission import review
from webhook.admission.review import (
    ReviewError,
    allowed,
    annotations_patch,
    apply_decision,
    decode_review,
    denied,
    patched,
    review_response,
)

GOOD = make_review(make_request(pod()))


def _with(path: list[str], value: Any) -> bytes:
    review = json.loads(json.dumps(GOOD))
    target = review
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(review).encode()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b"[" * 100_000, "nested too deeply"),
        (json.dumps({**GOOD, "apiVersion": "admission.k8s.io/v1beta1"}).encode(), "admissionReviewVersions"),
        (json.dumps({**GOOD, "kind": "Pod"}).encode(), "kind AdmissionReview"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "request"}).encode(), "no request"),
        (_with(["request", "uid"], ""), "uid"),
        (_with(["request", "uid"], 7), "uid"),
        (_with(["request", "operation"], "PATCH"), "operation"),
        (_with(["request", "kind"], "Pod"), "request.kind"),
        (_with(["request", "object"], []), "request.object"),
        (_with(["request", "namespace"], 3), "request.namespace"),
        (_with(["request", "userInfo"], {"groups": "admins"}), "groups"),
    ],
)
def test_malformed_reviews_are_refused_with_the_reason(body: bytes, says: str) -> None:
    with pytest.raises(ReviewError, match=None) as caught:
        decode_review(body)
    assert says in str(caught.value)


def test_a_good_review_decodes_to_its_request() -> None:
    request = decode_review(json.dumps(GOOD).encode())
    assert request["uid"] == GOOD["request"]["uid"]
    assert request["operation"] == "CREATE"


def test_allowed_has_no_status_and_no_patch() -> None:
    response = review_response(uid="u1", decision=allowed())
    assert response == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u1", "allowed": True},
    }


def test_denied_carries_a_403_status_and_warnings() -> None:
    response = review_response(uid="u2", decision=denied("no", ["careful", "careful", "x" * 400]))["response"]
    assert response["allowed"] is False
    assert response["status"] == {"code": 403, "reason": "Forbidden", "message": "no"}
    assert response["warnings"][0] == "careful"
    assert len(response["warnings"]) == 2
    assert len(response["warnings"][1]) == 256


def test_a_patch_is_a_base64_jsonpatch_from_original_to_mutated() -> None:
    original = pod(annotations={"a~b/c": "1"})
    mutated = json.loads(json.dumps(original))
    mutated["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] = "dp"
    decision = patched(original, mutated)
    response = review_response(uid="u3", decision=decision)["response"]
    assert response["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(response["patch"]))
    assert operations == [
        {"op": "add", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks", "value": "dp"}
    ]
    assert apply_decision(original, decision) == mutated


def test_no_change_means_no_patch() -> None:
    original = pod()
    decision = patched(original, json.loads(json.dumps(original)))
    assert decision.outcome == "allowed"
    assert "patchType" not in review_response(uid="u", decision=decision)["response"]


def _decodes_whole_or_says_why(body: bytes) -> None:
    """A body is a request with every field a handler reads, or a ReviewError that says why."""
    try:
        request = decode_review(body)
    except ReviewError as err:
        reason = str(err)
    else:
        assert isinstance(request["uid"], str) and request["uid"]
        assert isinstance(request["operation"], str) and isinstance(request["kind"], dict)
        assert review.describe(request)  # the log line of any decoded request
        return
    assert reason.strip(), f"{body!r}: refused without a reason"


@given(st.binary(max_size=2048))
def test_random_bytes_decode_or_raise_review_error(body: bytes) -> None:
    _decodes_whole_or_says_why(body)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "uid",
                    "kind",
                    "operation",
                    "object",
                    "request",
                    "apiVersion",
                    "namespace",
                    "userInfo",
                    "groups",
                    "x",
                ]
            ),
            c,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@given(_json)
def test_random_json_decodes_or_raises_review_error(value: object) -> None:
    for body in (value, {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": value}):
        _decodes_whole_or_says_why(json.dumps(body).encode())


_doc = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "a/b", "~0", "", "metadata", "x~y"]), c, max_size=4)
    ),
    max_leaves=25,
)


@given(
    st.dictionaries(st.text(max_size=5), _doc, max_size=4),
    st.dictionaries(st.text(max_size=5), _doc, max_size=4),
)
def test_the_patch_turns_the_original_into_the_mutated_object(
    original: dict[str, Any], mutated: dict[str, Any]
) -> None:
    decision = patched(original, mutated)
    assert apply_decision(original, decision) == mutated
    assert (decision.patch == ()) == (original == mutated and json.dumps(original) == json.dumps(mutated))


_annotation_keys = st.sampled_from(["k8s.v1.cni.cncf.io/networks", "multihome.io/injected-by", "a~b", "x"])


@given(
    st.one_of(
        st.dictionaries(st.sampled_from(["metadata", "spec", "kind"]), _doc, max_size=3),
        st.fixed_dictionaries({"metadata": st.one_of(_doc, st.fixed_dictionaries({"annotations": _doc}))}),
        st.fixed_dictionaries(
            {
                "metadata": st.fixed_dictionaries(
                    {"annotations": st.dictionaries(_annotation_keys, st.text(max_size=3))}
                )
            }
        ),
    ),
    st.dictionaries(_annotation_keys, st.text(max_size=3), min_size=1, max_size=2),
)
def test_the_annotations_patch_is_the_diff_of_an_edited_copy(
    original: dict[str, Any], changes: dict[str, str]
) -> None:
    edited = copy.deepcopy(original)
    if not isinstance(edited.get("metadata"), dict):
        edited["metadata"] = {}
    if not isinstance(edited["metadata"].get("annotations"), dict):
        edited["metadata"]["annotations"] = {}
    edited["metadata"]["annotations"].update(changes)
    decision = annotations_patch(original, changes, ["w"])
    # The operations touch distinct paths, so their order does not matter.
    assert sorted(decision.patch, key=str) == sorted(patched(original, edited).patch, key=str)
    assert apply_decision(original, decision) == edited
    assert decision.warnings == ("w",) and decision.allowed


def test_metadata_that_is_not_an_object_is_a_malformed_review() -> None:
    with pytest.raises(ReviewError, match=r"request\.object\.metadata must be an object"):
        decode_review(_with(["request", "object", "metadata"], [1]))
    with pytest.raises(ReviewError, match=r"request\.oldObject\.metadata must be an object"):
        decode_review(_with(["request", "oldObject"], {"metadata": "x"}))


def test_long_paths_are_patched_but_not_remembered() -> None:
    long_key = "a/~" * 200
    original: dict[str, Any] = {"spec": {long_key: 1, "short/~": 1}}
    mutated: dict[str, Any] = {"spec": {long_key: 2, "short/~": 2}}
    patched({"spec": {"short/~": 1}}, {"spec": {"short/~": 2}})
    remembered_before = review._remembered_pointer.cache_info().currsize
    decision = patched(original, mutated)
    assert apply_decision(original, decision) == mutated
    assert {op["path"] for op in decision.patch} == {
        "/spec/" + long_key.replace("~", "~0").replace("/", "~1"),
        "/spec/short~1~0",
    }
    # The short path was remembered by the patch before; the long one is never remembered.
    assert review._remembered_pointer.cache_info().currsize == remembered_before
