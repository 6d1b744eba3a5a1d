"""The Helm chart, checked without helm: values against the schema, every YAML file, the
webhook paths against the server's routes, and RBAC against the API calls the server makes.

`make chart-check` adds `helm lint` and `helm template` (validated against the Kubernetes
schemas) where helm is installed; `.ci/run` installs it.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from cryptography import x509
from prometheus_client import generate_latest

from certs.issue import CertificateRequest, ensure_certificates
from certs.sync import sync_certificates
from policies.aws import OnEc2
from policies.controllers.events import EventRecorder
from policies.controllers.ip_manager import IpManager, Verdict
from policies.controllers.reconcile import Reconciler
from policies.controllers.rule_status import sync_rule_status
from tests.fake_apiserver import FakeApiServer
from tests.server import ROOT
from tests.support import UPF, dataplane_objects, upf_policy
from tests.test_cert_sync import MUTATING, VALIDATING, configuration
from tests.test_live import eventually
from webhook import __version__
from webhook.aws.ec2 import Ec2Reader
from webhook.cluster.authorizer import SubjectAccessReviewer
from webhook.cluster.kube import Endpoint, HttpKubeApi
from webhook.cluster.lease import LeaseElector
from webhook.cluster.live import POLICIES_PATH, LiveState
from webhook.decisions.label_rights import Subject
from webhook.decisions.snapshot import SourceStatus
from webhook.server.app import default_routes
from webhook.telemetry.metrics import Metrics

CHART = ROOT / "chart"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def merged(base: Any, override: Any) -> Any:
    """Helm's values merge: maps merge recursively, everything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        result = dict(base)
        for key, value in override.items():
            result[key] = merged(base.get(key), value)
        return result
    return copy.deepcopy(override)


@pytest.mark.parametrize("override", sorted(p.name for p in (CHART / "ci").glob("*.yaml")))
def test_values_and_example_overrides_follow_the_schema(override: str) -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(VALUES, SCHEMA)
    jsonschema.validate(merged(VALUES, yaml.safe_load((CHART / "ci" / override).read_text())), SCHEMA)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"webhooks": {"timeoutSeconds": 10}}, "timeoutSeconds"),
        ({"webhooks": {"podValidation": {"failurePolicy": "Maybe"}}}, "failurePolicy"),
        ({"policy": {"namespaceIsolation": "loose"}}, "namespaceIsolation"),
        ({"serve": {"replicas": 0}}, "replicas"),
        ({"policy": {"labelAdmins": ["group:"]}}, "labelAdmins"),
        ({"typo": True}, "typo"),
    ],
)
def test_the_schema_rejects_broken_values(override: dict[str, Any], field: str) -> None:
    with pytest.raises(jsonschema.ValidationError, match=field):
        jsonschema.validate(merged(VALUES, override), SCHEMA)


def test_every_plain_yaml_file_parses() -> None:
    files = [
        CHART / "Chart.yaml",
        CHART / "values.yaml",
        *CHART.glob("ci/*.yaml"),
        *CHART.glob("crds/*.yaml"),
    ]
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == __version__


def test_every_value_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[a-zA-Z]\w*:", line):
            assert lines[index - 1].startswith("#") or lines[index - 1] == "", (
                f"values.yaml: {line} has no comment"
            )
    assert sum(1 for line in lines if line.lstrip().startswith("#")) >= 40


def test_the_webhook_paths_are_the_servers_routes() -> None:
    template = (CHART / "templates" / "webhooks.yaml").read_text()
    paths = set(re.findall(r'"path" "(/[a-z/]+)"', template))
    assert paths == set(default_routes())


def test_webhook_configurations_are_safe_by_construction() -> None:
    template = (CHART / "templates" / "webhooks.yaml").read_text()
    hooks = template.count("- name: ")
    assert template.count('admissionReviewVersions: ["v1"]') == hooks
    assert template.count("sideEffects: None") == hooks
    assert template.count("timeoutSeconds: {{ $timeout }}") == hooks
    assert template.count("failurePolicy: {{ .Values.webhooks.") == hooks
    assert VALUES["webhooks"]["timeoutSeconds"] <= 3
    assert "reinvocationPolicy: IfNeeded" in template
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert "- {{ .Release.Namespace }}\n    - kube-system" in helpers, (
        "the release namespace and kube-system are always excluded"
    )


def test_the_pod_runs_restricted() -> None:
    """The defaults meet the restricted Pod Security Standard (the tier admits them under it)."""
    assert VALUES["podSecurityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert VALUES["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    template = (CHART / "templates" / "deployment.yaml").read_text()
    assert template.count("toYaml .Values.securityContext") == 1 + template.count("- name: certificates")
    for needle in ("toYaml .Values.podSecurityContext", "path: /healthz", "path: /readyz"):
        assert needle in template, needle


# --- RBAC against the API calls the server really makes ---------------------------------

RENDER_NAMES = {
    '{{ include "multihome.fullname" . }}': "multihome",
    "{{ $fullname }}": "multihome",
    '{{ include "multihome.controllerServiceAccountName" . }}': "multihome-controller",
    '{{ include "multihome.tlsSecretName" . }}': "multihome-tls",
    '{{ include "multihome.serviceAccountName" . }}': "multihome",
    "{{ .Release.Namespace }}": "multihome",
}


IDENTITIES = ("multihome", "multihome-controller")  # serve's roles, the controller's


def chart_rules(identity: str) -> list[dict[str, Any]]:
    """The RBAC rules of `identity`'s roles in rbac.yaml with default values, every conditional grant included."""
    text = (CHART / "templates" / "rbac.yaml").read_text()
    # Policy report grants depend on the APIs the cluster serves at install: the
    # real-control-plane tier checks them (tests/envtest), the test API server serves neither.
    text = re.sub(r"\{\{- if \.Capabilities.*?\{\{- end \}\}", "", text, flags=re.DOTALL)
    for template, value in RENDER_NAMES.items():
        text = text.replace(template, value)
    text = re.sub(r"\{\{ if [^}]*\}\}(.*?)\{\{ end \}\}", r"\1", text)
    text = "\n".join(
        line for line in text.splitlines() if not re.match(r"\s*\{\{-? ?(if|end|include|\$fullname :=)", line)
    )
    rules = []
    for doc in yaml.safe_load_all(text):
        if doc and doc["kind"] in ("ClusterRole", "Role") and doc["metadata"]["name"] == identity:
            for item in doc["rules"]:
                rules.append({**item, "namespace": doc["metadata"].get("namespace")})
    assert rules, f"no roles named {identity}"
    return rules


def api_call(method: str, raw: str) -> tuple[str, str, str, str, str]:
    """(group, resource, verb, namespace, name) of one request the test API server saw."""
    url = urlsplit(raw)
    parts = url.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    elif rest[0] == "namespaces" and len(rest) == 2:
        rest = ["namespaces", rest[1]]
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    if len(rest) == 3:  # a subresource: NAME/status
        resource = f"{resource}/{rest[2]}"
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    verb = verbs.get(method) or ("watch" if "watch=true" in url.query else "get" if name else "list")
    return group, resource, verb, namespace, name


def allowed(call: tuple[str, str, str, str, str], rules: list[dict[str, Any]]) -> bool:
    group, resource, verb, namespace, name = call
    for r in rules:
        if group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]:
            if r["namespace"] is not None and namespace != r["namespace"]:
                continue
            if "resourceNames" in r and name not in r["resourceNames"]:
                continue
            return True
    return False


def recorded_calls(api: FakeApiServer) -> list[tuple[str, str, str, str, str]]:
    calls = []
    for request in api.requests:
        method, _, path = request.partition(" ") if " " in request else ("GET", "", request)
        calls.append(api_call(method, path))
    return calls


def cluster_api() -> FakeApiServer:
    api = FakeApiServer(bookmark_interval=0.2)
    for collection, obj in [*dataplane_objects(), (POLICIES_PATH, upf_policy(uid="u"))]:
        api.put(collection, obj)
    api.put(MUTATING, configuration("MutatingWebhookConfiguration", "inject"))
    api.put(VALIDATING, configuration("ValidatingWebhookConfiguration", "validate"))
    # The chart renders the certificate Secret empty (chart/templates/certificate-secret.yaml).
    empty = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque"}
    api.put("/api/v1/secrets", {**empty, "metadata": {"name": "multihome-tls", "namespace": "multihome"}})
    return api


def serve_calls(tmp_path: Path) -> list[tuple[str, str, str, str, str]]:
    """What admission asks of the API server: its watches, the authorizer, direct lookups."""
    api = cluster_api()
    port = api.serve()
    client = HttpKubeApi(Endpoint.load(api.kubeconfig(tmp_path, port)))
    state = LiveState(client, watch_timeout=1, network_policies=False).start()
    try:
        eventually(state.ready)
        assert not SubjectAccessReviewer(client).may_label(Subject("alice"), "core").allowed
        state.namespace("created-a-moment-ago")
        state.nad("core", "created-a-moment-ago")
    finally:
        state.stop()
        api.close()
    return recorded_calls(api)


def controller_calls(tmp_path: Path) -> list[tuple[str, str, str, str, str]]:
    """What the controller's parts ask: watches with policies, Lease, reconciler, certificates, status, Events."""
    api = cluster_api()
    upf = UPF
    port = api.serve()
    client = HttpKubeApi(Endpoint.load(api.kubeconfig(tmp_path, port)))
    state = LiveState(client, watch_timeout=1).start()
    try:
        eventually(state.ready)
        elector = LeaseElector(client, "multihome", "multihome-reconciler", "pod-a")
        assert elector.try_acquire_or_renew()
        assert elector.try_acquire_or_renew()
        Reconciler(state, client, writes_per_second=1000).reconcile_once()
        changed = {
            "kind": "NetworkPolicy",
            "metadata": {"name": "upf", "namespace": "core", "uid": "u"},
            "spec": {
                "podSelector": upf,
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": upf}], "ports": [{"port": 80}]}],
            },
        }
        api.put(POLICIES_PATH, changed)
        eventually(lambda: all(p["spec"].get("policyTypes") for p in state.network_policies()))
        Reconciler(state, client, writes_per_second=1000).reconcile_once()  # updates the companion
        api.delete(POLICIES_PATH, "core", "upf")
        eventually(lambda: not list(state.network_policies()))
        Reconciler(state, client, writes_per_second=1000).reconcile_once()  # deletes the companion
        sync_certificates(
            client, CertificateRequest("multihome", "multihome"), "multihome", "multihome-tls", "multihome"
        )
        sync_certificates(
            client, CertificateRequest("multihome", "other"), "multihome", "multihome-tls", "multihome"
        )  # update
        assert sync_rule_status(client, state) == 1  # the dataplane rule's status
        clock = [0.0]
        events = EventRecorder(client, "pod-a", clock=lambda: clock[0])
        for _ in range(2):  # an Event, then its series 30 s later
            events.record(
                {"kind": "NetworkPolicy", "namespace": "core", "name": "upf"},
                "Normal",
                "Enriched",
                "Enrich",
                "n",
            )
            clock[0] += 31
        state.namespace("created-a-moment-ago")
        state.nad("core", "created-a-moment-ago")
        OnEc2.from_api(client)  # controller --aws: which instance each Node is, and the Pods on them
        upf_pod = next(p for p in state.pods("core") if not p.owner)
        IpManager(client, state, Ec2Reader(None)).set_conditions(  # --ip-management: the Pods' gate
            [upf_pod], {(upf_pod.namespace, upf_pod.name): Verdict(False, "Pending", "not assigned yet")}
        )
    finally:
        state.stop()
        api.close()
    return recorded_calls(api)


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[str, str, str, str, str]]]:
    """Each identity's API calls, driven against the test API server."""
    return {
        "multihome": serve_calls(tmp_path_factory.mktemp("serve")),
        "multihome-controller": controller_calls(tmp_path_factory.mktemp("controller")),
    }


EXERCISED = {
    "multihome": [
        ("", "pods", "watch"),
        ("", "namespaces", "get"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    ],
    "multihome-controller": [
        ("", "pods", "watch"),
        ("networking.k8s.io", "networkpolicies", "patch"),
        ("k8s.cni.cncf.io", "multi-networkpolicies", "delete"),
        ("coordination.k8s.io", "leases", "update"),
        ("", "secrets", "update"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch"),
        ("multihome.io", "attachmentrules/status", "patch"),
        ("events.k8s.io", "events", "patch"),
        ("", "nodes", "list"),
        ("", "pods/status", "patch"),
    ],
}


@pytest.mark.parametrize("identity", IDENTITIES)
def test_rbac_covers_every_api_call_each_identity_makes(
    calls: dict[str, list[tuple[str, str, str, str, str]]], identity: str
) -> None:
    rules = chart_rules(identity)
    verbs = {(c[0], c[1], c[2]) for c in calls[identity]}
    for expected in EXERCISED[identity]:
        assert expected in verbs, f"the drive did not exercise {expected}"
    missing = sorted({c for c in calls[identity] if not allowed(c, rules)})
    assert missing == [], f"RBAC does not allow {identity}: {missing}"


@pytest.mark.parametrize("identity", IDENTITIES)
def test_rbac_grants_nothing_an_identity_does_not_use(
    calls: dict[str, list[tuple[str, str, str, str, str]]], identity: str
) -> None:
    used = {(c[0], c[1], c[2]) for c in calls[identity]}
    for r in chart_rules(identity):
        for group in r["apiGroups"]:
            for resource in r["resources"]:
                for verb in r["verbs"]:
                    assert (group, resource, verb) in used, (
                        f"RBAC grants {identity} {verb} on {group}/{resource}, which it never does"
                    )


def test_admission_writes_nothing() -> None:
    """serve's identity: reads, and the one review it asks the authorizer; never a write of its own."""
    writes = {
        (group, resource, verb)
        for r in chart_rules("multihome")
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
        if verb not in ("get", "list", "watch")
    }
    assert writes == {("authorization.k8s.io", "subjectaccessreviews", "create")}


def exposed_metric_names() -> set[str]:
    """Every sample name the server's metrics expose (counters as _total, histograms as _bucket...)."""
    metrics = Metrics()
    metrics.review("/p", "CREATE", "allowed", 0.001)
    metrics.flush()
    metrics.rejected.labels(path="/p", code="400").inc()
    metrics.handler_errors.labels(path="/p").inc()
    metrics.leader.set(1)
    metrics.certificate_expiry.set(1)
    metrics.record_audit({("MH001", "error"): 1})
    metrics.record_state({"pods": 1}, [SourceStatus("pods", True, False, 1, 0.5, 0, 0)])
    text = generate_latest(metrics.registry).decode()
    return set(re.findall(r"^(multihome_\w+)[{ ]", text, flags=re.MULTILINE))


def test_alerts_and_the_dashboard_query_metrics_the_server_exposes() -> None:
    exposed = exposed_metric_names()
    rules = (CHART / "templates" / "prometheusrule.yaml").read_text()
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(queries) >= 8 and {p["title"] for p in dashboard["panels"]} >= {
        "Reviews by endpoint and decision",
        "Decision latency, p50 and p99",
        "Audit findings by severity",
    }
    for text in [rules, *queries]:
        for name in re.findall(r"multihome_\w+", text):
            assert name in exposed, f"{name} is queried but never exposed"
    alerts = set(re.findall(r"alert: (\w+)", rules))
    assert alerts == {
        "MultihomeHandlerErrors",
        "MultihomeStateNotSynced",
        "MultihomeWatchesFailing",
        "MultihomeWatchErrorsRising",
        "MultihomeCertificateExpiringSoon",
        "MultihomeReconcilerWithoutLeader",
    }


def test_the_certificate_expiry_gauge_follows_the_file(tmp_path: Path) -> None:
    metrics = Metrics()
    certs = tmp_path / "certs"
    ensure_certificates(certs, CertificateRequest("multihome", "multihome"))
    metrics.record_certificate(certs / "tls.crt")
    expiry = x509.load_pem_x509_certificate((certs / "tls.crt").read_bytes()).not_valid_after_utc.timestamp()
    assert metrics.registry.get_sample_value("multihome_certificate_expiry_timestamp_seconds") == expiry
    metrics.record_certificate(tmp_path / "missing.crt")  # an unreadable file leaves the gauge alone
    assert metrics.registry.get_sample_value("multihome_certificate_expiry_timestamp_seconds") == expiry
