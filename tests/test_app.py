"""The HTTP layer in process: status codes, the uid echo, errors that never become 500s."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import reviews
from tests.support import make_request, make_review, nad, pod
from webhook.admission.review import AdmissionRequest, Decision
from webhook.cluster.files import FileState
from webhook.decisions.policy import AdmissionPolicy
from webhook.decisions.snapshot import ClusterState
from webhook.server.app import create_app, default_routes
from webhook.server.settings import ServeSettings

ROUTES = sorted(default_routes())


@pytest.fixture
def client(cluster: FileState) -> FlaskClient:
    return create_app(ServeSettings(max_body_bytes=64 * 1024), cluster).test_client()


def _post(client: FlaskClient, path: str, body: Any, content_type: str = "application/json") -> Any:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, data=data, content_type=content_type)


@pytest.mark.parametrize("path", ROUTES)
def test_every_route_echoes_the_uid(client: FlaskClient, path: str) -> None:
    request = make_request(pod())
    response = _post(client, path, make_review(request))
    assert response.status_code == 200
    body = response.get_json()
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == request["uid"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (b"{", "application/json", 400, "not valid JSON"),
        ({"kind": "AdmissionReview"}, "application/json", 400, "apiVersion"),
        ({"x": 1}, "text/plain", 415, "application/json"),
        ({"x": 1}, "", 415, "application/json"),
        (
            b"x" * (64 * 1024 + 1),
            "application/json",
            413,
            "(--max-body-bytes; chart value server.maxBodyBytes)",
        ),
    ],
)
def test_bad_requests_get_a_json_reason(
    client: FlaskClient, body: Any, content_type: str, status: int, says: str
) -> None:
    response = _post(client, "/validate/pods", body, content_type)
    assert response.status_code == status
    assert says in response.get_json()["reason"]


def test_json_with_charset_is_accepted(client: FlaskClient) -> None:
    response = _post(
        client, "/validate/pods", make_review(make_request(pod())), "application/json; charset=utf-8"
    )
    assert response.status_code == 200


def test_unknown_paths_and_methods_answer_in_json(client: FlaskClient) -> None:
    assert client.post("/mutate/deployments", json={}).status_code == 404
    response = client.get("/validate/pods")
    assert response.status_code == 405
    assert response.get_json()["error"] == "Method Not Allowed"


def test_a_handler_that_raises_becomes_a_denial(cluster: FileState) -> None:
    def broken(request: AdmissionRequest, state: ClusterState, policy: AdmissionPolicy) -> Decision:
        raise KeyError("boom")

    client = create_app(ServeSettings(), cluster, routes={"/validate/pods": broken}).test_client()
    request = make_request(pod())
    response = _post(client, "/validate/pods", make_review(request))
    assert response.status_code == 200
    body = response.get_json()["response"]
    assert body["uid"] == request["uid"]
    assert body["allowed"] is False
    assert "KeyError" in body["status"]["message"]
    assert "boom" not in body["status"]["message"]


def test_health_readiness_and_metrics(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    _post(
        client,
        "/validate/networkattachmentdefinitions",
        make_review(make_request(nad("x", "kube-system", '{"type":"aws-cni"}'))),
    )
    _post(client, "/validate/pods", b"nope")
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'multihome_admission_reviews_total{decision="denied",operation="CREATE",path="/validate/networkattachmentdefinitions"} 1.0'
        in text
    )
    assert 'multihome_http_rejected_requests_total{code="400",path="/validate/pods"} 1.0' in text
    assert 'multihome_state_objects{kind="networkattachmentdefinitions"} 8.0' in text
    assert "multihome_admission_decision_seconds_bucket" in text


def test_readyz_follows_the_state(cluster: FileState) -> None:
    class Unsynced(FileState):
        def ready(self) -> bool:
            return False

    client = create_app(ServeSettings(), Unsynced([])).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "not synced" in response.get_json()["reason"]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=12), c, max_size=5),
    max_leaves=40,
)
_object = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "name": _json,
                "namespace": _json,
                "labels": _json,
                "annotations": _json
                | st.fixed_dictionaries({"k8s.v1.cni.cncf.io/networks": st.text(max_size=60)}),
            },
        ),
        "spec": _json,
    },
)
_request = st.fixed_dictionaries(
    {
        "uid": st.text(min_size=1, max_size=10),
        "kind": st.fixed_dictionaries(
            {
                "group": st.sampled_from(["", "k8s.cni.cncf.io", "multihome.io"]),
                "version": st.just("v1"),
                "kind": st.sampled_from(
                    ["Pod", "Namespace", "NetworkAttachmentDefinition", "AttachmentRule"]
                ),
            }
        ),
        "operation": st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"]),
    },
    optional={
        "object": _object | _json,
        "oldObject": _object,
        "namespace": st.text(max_size=10),
        "userInfo": st.fixed_dictionaries(
            {"username": st.text(max_size=5), "groups": st.lists(st.text(max_size=5))}
        ),
    },
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], max_examples=150)
@given(
    st.sampled_from(ROUTES),
    st.one_of(
        st.binary(max_size=512),
        _json.map(lambda v: json.dumps(v).encode()),
        _request.map(lambda r: json.dumps(make_review(r)).encode()),  # type: ignore[arg-type]
    ),
)
def test_garbage_gets_a_400_or_a_review_never_a_500(client: FlaskClient, path: str, body: bytes) -> None:
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code in (200, 400)
    payload = response.get_json()
    if response.status_code == 200:
        assert payload["response"]["uid"] == json.loads(body)["request"]["uid"]
        assert isinstance(payload["response"]["allowed"], bool)
        # A handler exception is answered with a denial: here it would be a bug.
        assert "could not decide" not in payload["response"].get("status", {}).get("message", "")
    else:
        assert payload["reason"]


def test_each_review_is_logged_once_with_its_decision(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="multihome.admission")
    request = make_request(pod(labels={"app": "upf"}))
    _post(client, "/mutate/pods", make_review(request))
    (record,) = [r for r in caplog.records if getattr(r, "uid", None) == request["uid"]]
    assert record.getMessage() == "review"
    assert vars(record)["decision"] == "patched"
    assert vars(record)["object_name"] == "p"
    assert vars(record)["namespace"] == "core"


def test_plain_allows_are_logged_at_debug_and_everything_else_at_info(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="multihome.admission")
    reviews = {
        "patched": ("/mutate/pods", make_request(pod(labels={"app": "upf"}))),
        "allowed": ("/validate/pods", make_request(pod())),
        "denied": (
            "/validate/pods",
            make_request(pod(annotations={"k8s.v1.cni.cncf.io/networks": "Not A Name"})),
        ),
    }
    levels = {}
    for outcome, (path, request) in reviews.items():
        _post(client, path, make_review(request))
        (record,) = [r for r in caplog.records if getattr(r, "uid", None) == request["uid"]]
        assert vars(record)["decision"] == outcome
        levels[outcome] = record.levelname
    assert levels == {"patched": "INFO", "allowed": "DEBUG", "denied": "INFO"}


def test_a_replicas_line_is_written_once_and_a_denials_always(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="multihome.admission")
    replica = pod(labels={"app": "upf"})
    replica["metadata"] = {**replica["metadata"], "generateName": "upf-7d9c8b6f5-"}
    del replica["metadata"]["name"]
    bad = pod(annotations={"k8s.v1.cni.cncf.io/networks": "Not A Name"})
    cases = [("/mutate/pods", replica)] * 3 + [("/validate/pods", bad)] * 2 + [("/validate/pods", pod())]
    seen = []
    for path, obj in cases:
        request = make_request(obj)
        _post(client, path, make_review(request))
        (record,) = [r for r in caplog.records if getattr(r, "uid", None) == request["uid"]]
        seen.append((vars(record)["decision"], record.levelname))
    assert seen == [
        ("patched", "INFO"),  # the first replica
        ("patched", "DEBUG"),  # the others, within the window
        ("patched", "DEBUG"),
        ("denied", "INFO"),  # never sampled
        ("denied", "INFO"),
        ("allowed", "DEBUG"),
    ]


def test_a_name_that_is_not_a_string_is_answered_and_logged(client: FlaskClient) -> None:
    # Found by the fuzzer: an injection's line is sampled by its name, which was unhashable.
    policy = {"metadata": {"name": [None], "namespace": None}, "": None}
    request = {
        "uid": "0",
        "kind": {"group": "", "version": "", "kind": ""},
        "operation": "CREATE",
        "object": policy,
    }
    for path in ("/mutate/networkpolicies", "/mutate/pods"):
        response = _post(client, path, make_review(request))  # type: ignore[arg-type]
        assert response.status_code == 200
        assert response.get_json()["response"]["uid"] == "0"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("NaN", "unexpected character"),
        ("Infinity", "unexpected character"),
        ("1e400", "infinity"),
        ('"\\ud800"', "surrogate"),
    ],
)
def test_what_json_does_not_have_is_a_400_that_says_where(client: FlaskClient, value: str, said: str) -> None:
    # Python's own json module would read each of these; the API server never sends them.
    body = json.dumps(make_review(make_request(pod()))).replace('"CREATE"', '"CREATE", "x": ' + value)
    response = _post(client, "/mutate/pods", body)
    assert response.status_code == 400
    reason = response.get_json()["reason"]
    assert reason.startswith("body is not valid JSON") and said in reason and "column" in reason


def test_integers_past_64_bits_are_answered(client: FlaskClient) -> None:
    request = make_request(pod(annotations={"k8s.v1.cni.cncf.io/networks": "dp"}))
    body = json.dumps(make_review(request)).replace('"CREATE"', f'"CREATE", "x": {2**70}')
    response = _post(client, "/mutate/pods", body)
    assert response.status_code == 200
    assert response.get_json()["response"]["uid"] == request["uid"]


def test_huge_strings_and_deep_nesting_are_answered(client: FlaskClient) -> None:
    request = make_request(pod(annotations={"k8s.v1.cni.cncf.io/networks": "x" * 50_000}))
    response = _post(client, "/validate/pods", make_review(request))
    assert response.status_code == 200
    assert response.get_json()["response"]["allowed"] is False
    deep = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    response = _post(client, "/validate/pods", deep)
    assert response.status_code == 400
    assert "nested too deeply" in response.get_json()["reason"]


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    max_examples=400,
    deadline=None,
)
@given(reviews())
def test_adversarial_reviews_of_every_kind_get_a_decision(
    client: FlaskClient, case: tuple[str, dict[str, Any]]
) -> None:
    path, review = case
    response = client.post(path, data=json.dumps(review), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    answer = response.get_json()["response"]
    assert answer["uid"] == review["request"]["uid"]
    assert "could not decide" not in answer.get("status", {}).get("message", ""), answer


@pytest.mark.parametrize(
    ("path", "obj"),
    [
        ("/mutate/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": None, "spec": {}}),
        (
            "/mutate/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"labels": {"app": "upf"}, "annotations": 5},
                "spec": {},
            },
        ),
        (
            "/mutate/networkpolicies",
            {
                "kind": "NetworkPolicy",
                "metadata": None,
                "spec": {"podSelector": {"matchLabels": {"app": "upf"}}},
            },
        ),
        (
            "/mutate/networkpolicies",
            {
                "kind": "NetworkPolicy",
                "metadata": {"annotations": -1},
                "spec": {"podSelector": {"matchLabels": {"app": "upf"}}, "ingress": {}},
            },
        ),
    ],
)
def test_objects_the_fuzzer_broke_get_a_decision(client: FlaskClient, path: str, obj: dict[str, Any]) -> None:
    request = make_request(obj, kind=obj["kind"], namespace="core")
    response = _post(client, path, make_review(request))
    assert response.status_code == 200
    assert "could not decide" not in response.get_json()["response"].get("status", {}).get("message", "")
