"""Every value the chart writes into a container's args reaches the program as the type it expects.

Helm hands numbers from values files to templates as float64, so a bare
`{{ .Values.x }}` renders 4194304 as `4.194304e+06`. These tests render the chart with
its defaults, each `chart/ci/*.yaml` and edge values, then parse the rendered args with the
program's own command line and compare the settings with the values that went in.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.envtest.chart import CHART, named, render
from webhook.cli.parser import build_parser, controller_settings_from, settings_from
from webhook.decisions.policy import Principal
from webhook.server.settings import ServeSettings

DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
EDGES: dict[str, dict[str, Any]] = {
    "large numbers": {"server": {"maxBodyBytes": 1073741824, "workers": 16, "threads": 64}},
    "one replica, no PDB": {"serve": {"replicas": 1}},
    "many replicas": {"serve": {"replicas": 1000000}},
    "empty global namespaces": {"policy": {"globalNamespaces": []}},
    "one label admin": {"policy": {"labelAdmins": ["group:platform-admins"], "globalNamespaces": ["shared"]}},
    "many exclusions": {"webhooks": {"excludeNamespaces": ["monitoring", "logging"], "timeoutSeconds": 1}},
    "percentage PDB": {"serve": {"podDisruptionBudget": {"maxUnavailable": "34%"}}},
    "service port": {"service": {"port": 8443}},
    "what platform teams set": {
        "image": {"digest": "sha256:" + "ab" * 32},
        "serve": {
            "extraArgs": ["--unsupported-types=deny"],
            "extraEnv": [{"name": "AWS_REGION", "value": "eu-west-1"}],
            "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca", "optional": True}}],
            "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/region",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "multihome"}},
                }
            ],
        },
        "podSecurityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "podAnnotations": {"example.com/owner": "platform"},
        "serviceAccount": {
            "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/multihome"}
        },
    },
    "an external issuer": {
        "certManager": {
            "enabled": True,
            "issuerRef": {
                "name": "private-ca",
                "kind": "AWSPCAClusterIssuer",
                "group": "awspca.cert-manager.io",
            },
            "duration": "2160h0m0s",
            "renewBefore": "720h0m0s",
        }
    },
}


def merged(base: Any, override: Any) -> Any:
    """Helm's values merge: maps merge, everything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: merged(base.get(k), v) for k, v in override.items()}}
    return override


def cases() -> Iterator[Any]:
    yield pytest.param(None, DEFAULTS, id="default values")
    for path in sorted((CHART / "ci").glob("*.yaml")):
        yield pytest.param(path, merged(DEFAULTS, yaml.safe_load(path.read_text())), id=path.name)
    for name, override in EDGES.items():
        yield pytest.param(override, merged(DEFAULTS, override), id=name)


def parse(args: list[str]) -> argparse.Namespace:
    """The rendered args through the program's own parser (argparse exits on unknown flags)."""
    return build_parser().parse_args(args)


def floats(value: Any, where: str = "") -> Iterator[str]:
    """Paths of every float in a rendered object: Kubernetes manifests here hold none."""
    if isinstance(value, float):
        yield f"{where} = {value!r}"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from floats(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from floats(item, f"{where}[{index}]")


@pytest.mark.parametrize(("values", "expected"), list(cases()))
def test_rendered_args_parse_to_the_values_given(
    values: Path | Mapping[str, Any] | None, expected: Any
) -> None:
    docs = render(values)
    spec = named(docs, "Deployment", "multihome")["spec"]
    controller_spec = named(docs, "Deployment", "multihome-controller")["spec"]
    containers = {
        c["name"]: c
        for s in (spec, controller_spec)
        for c in [*s["template"]["spec"].get("initContainers", []), *s["template"]["spec"]["containers"]]
    }
    assert "initContainers" not in spec["template"]["spec"], "serve issues nothing: the controller does"
    background = controller_settings_from(parse(containers["controller"]["args"]))
    assert background.reconcile == expected["reconciler"]["enabled"]
    assert background.dry_run == expected["reconciler"]["dryRun"]
    assert background.lease_name == "multihome-reconciler"
    assert bool(background.cert_secret) is not expected["certManager"]["enabled"]
    assert controller_spec["replicas"] == expected["controller"]["replicas"]

    settings: ServeSettings = settings_from(parse(containers["webhook"]["args"]))
    server, policy = dict(expected["server"]), dict(expected["policy"])
    admission = settings.policy
    for extra in expected["serve"]["extraArgs"]:  # after the chart's own: the last one wins
        flag, _, value = extra.removeprefix("--").partition("=")
        policy[{"unsupported-types": "unsupportedTypes"}[flag]] = value
    assert settings.max_body_bytes == server["maxBodyBytes"]
    assert (settings.workers, settings.threads) == (server["workers"], server["threads"])
    assert settings.log_level == server["logLevel"]
    assert admission.global_namespaces == frozenset(policy["globalNamespaces"])
    assert admission.label_admins == tuple(Principal.parse(p) for p in policy["labelAdmins"])
    assert (admission.default_network, admission.unsupported_types) == (
        policy["defaultNetwork"],
        policy["unsupportedTypes"],
    )
    assert (admission.namespace_isolation, admission.missing_networks) == (
        policy["namespaceIsolation"],
        policy["missingNetworks"],
    )
    assert admission.ip_conflicts == policy["ipConflicts"]
    if "certificates" in containers:
        certs = parse(containers["certificates"]["args"])
        assert (certs.command, certs.patch_webhooks) == ("certs", True)
    assert spec["replicas"] == expected["serve"]["replicas"]

    for doc in docs:
        assert list(floats(doc, f"{doc['kind']}/{doc['metadata']['name']}")) == []
    for hook in [h for d in docs if d["kind"].endswith("WebhookConfiguration") for h in d["webhooks"]]:
        assert hook["timeoutSeconds"] == expected["webhooks"]["timeoutSeconds"]
        assert hook["clientConfig"]["service"]["port"] == expected["service"]["port"]
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    if expected["serve"]["replicas"] > 1:
        assert pdbs[0]["spec"]["maxUnavailable"] == expected["serve"]["podDisruptionBudget"]["maxUnavailable"]
    else:
        assert pdbs == []


def test_a_float_in_the_args_is_caught() -> None:
    """The check above fails on the original bug: the program refuses a float."""
    with pytest.raises(ValueError, match=r'--max-body-bytes "4.194304e\+06" is not a whole number'):
        settings_from(parse(["serve", "--max-body-bytes=4.194304e+06"]))
    assert list(floats({"spec": {"replicas": 3.0}})) == [".spec.replicas = 3.0"]


WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def mounted_objects(spec: Mapping[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(kind, name, optional) of every Secret and ConfigMap a Pod spec's volumes mount."""
    for volume in spec.get("volumes", []):
        sources = [volume, *volume.get("projected", {}).get("sources", [])]
        for source in sources:
            if "secret" in source:
                ref = source["secret"]
                yield "Secret", ref.get("secretName") or ref.get("name", ""), bool(ref.get("optional"))
            if "configMap" in source:
                ref = source["configMap"]
                yield "ConfigMap", ref["name"], bool(ref.get("optional"))


@pytest.mark.parametrize(("values", "expected"), list(cases()))
def test_every_mounted_secret_exists_before_the_pod_starts(values: Any, expected: Mapping[str, Any]) -> None:
    """A kubelet mounts every volume before any init container runs: each must exist by then.

    It exists when the chart renders it, when a Certificate the chart renders names it
    (cert-manager makes it, and the Pod waits), or the volume is optional.
    """
    del expected
    docs = render(values)
    rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
    issued = {("Secret", d["spec"]["secretName"]) for d in docs if d["kind"] == "Certificate"}
    for doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        spec = doc["spec"]["template"]["spec"]
        for kind, name, optional in mounted_objects(spec):
            assert optional or (kind, name) in rendered | issued, (
                f"{doc['kind']} {doc['metadata']['name']} mounts {kind} {name}, which the chart "
                "neither renders nor has a Certificate make, and the volume is not optional: "
                "the kubelet cannot start the Pod"
            )


def empty_annotations(value: Any, where: str = "") -> Iterator[str]:
    """Paths of every `annotations:` that renders empty: noise that some tools refuse."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "annotations" and not item:
                yield f"{where}.annotations"
            yield from empty_annotations(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from empty_annotations(item, f"{where}[{index}]")


@pytest.mark.parametrize(("values", "expected"), list(cases()))
def test_no_object_renders_an_empty_annotations_field(values: Any, expected: Mapping[str, Any]) -> None:
    del expected
    for doc in render(values):
        assert list(empty_annotations(doc, f"{doc['kind']}/{doc['metadata']['name']}")) == []


def test_what_platform_teams_set_reaches_the_pod() -> None:
    override = EDGES["what platform teams set"]
    spec = named(render(override), "Deployment", "multihome")["spec"]["template"]
    container = next(c for c in spec["spec"]["containers"] if c["name"] == "webhook")
    assert container["image"] == "ghcr.io/multihome/multihome@sha256:" + "ab" * 32
    assert container["args"][-1] == "--unsupported-types=deny"
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in container["env"]
    assert {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True} in container["volumeMounts"]
    # Helm merges maps: what is set replaces its keys, the defaults keep the rest.
    assert spec["spec"]["securityContext"] == {
        **DEFAULTS["podSecurityContext"],
        **override["podSecurityContext"],
    }
    assert container["securityContext"] == DEFAULTS["securityContext"], "the default stays where not set"
    assert spec["metadata"]["annotations"] == {"example.com/owner": "platform"}
    keys = [c["topologyKey"] for c in spec["spec"]["topologySpreadConstraints"]]
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone", "topology.kubernetes.io/region"]


@pytest.mark.parametrize(
    ("old", "value", "new"),
    [("replicaCount", 1, "serve.replicas"), ("extraArgs", ["--log-level=debug"], "serve.extraArgs")],
)
def test_a_value_from_the_one_deployment_chart_is_refused_with_its_new_name(
    old: str, value: Any, new: str
) -> None:
    with pytest.raises(AssertionError, match=rf"{old} moved to {re.escape(new)} in chart 0.2"):
        render({old: value})


def test_an_external_issuer_is_named_as_given() -> None:
    docs = render(EDGES["an external issuer"])
    (serving,) = [d for d in docs if d["kind"] == "Certificate"]
    assert serving["spec"]["issuerRef"] == {
        "name": "private-ca",
        "kind": "AWSPCAClusterIssuer",
        "group": "awspca.cert-manager.io",
    }
    assert (serving["spec"]["duration"], serving["spec"]["renewBefore"]) == ("2160h0m0s", "720h0m0s")


def test_only_the_controller_reads_aws_and_only_with_its_own_role() -> None:
    values = CHART / "ci" / "aws-values.yaml"
    docs = render(values)
    controller = named(docs, "Deployment", "multihome-controller")["spec"]["template"]["spec"]
    serve = named(docs, "Deployment", "multihome")["spec"]["template"]["spec"]
    (container,) = controller["containers"]
    assert "--aws" in container["args"] and "--aws-interval=300" in container["args"]
    assert {"--ip-management", "--ip-sweep-interval=300"} <= set(container["args"])
    (webhook,) = serve["containers"]
    assert "--ip-management" in webhook["args"]  # the readiness gate only: serve holds no AWS access
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in container["env"]
    assert not any("--aws" in arg for c in serve["containers"] for arg in c["args"])
    assert not any(e["name"].startswith("AWS_") for c in serve["containers"] for e in c.get("env", []))
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert accounts[controller["serviceAccountName"]]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/multihome-controller"
    }
    assert "annotations" not in accounts[serve["serviceAccountName"]]["metadata"]
    rules = named(docs, "ClusterRole", "multihome-controller")["rules"]
    assert {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]} in rules
    assert {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]} in rules
    serve_rules = named(docs, "ClusterRole", "multihome")["rules"]
    assert not any("pods/status" in r["resources"] or "nodes" in r["resources"] for r in serve_rules)
    assert "--aws" not in str(named(render(), "Deployment", "multihome-controller"))
