"""The Helm chart: `helm lint --strict`, `helm template` with several value sets, every rendered
object validated offline against the Kubernetes schemas, and bad values refused."""

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.chartkit import (
    CHART,
    COMPONENTS,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    by_kind,
    component_of,
    container_env,
    deployments,
    helm,
    merged,
    one,
    render,
    render_error,
    template,
    values_args,
)

# The Kubernetes release the objects are validated against (the chart asks for >= 1.27).
KUBERNETES_VERSION = "1.33.0"
FULL = f"{RELEASE}-switchboard"

# prometheus-operator kinds are CRDs, which kubernetes-validate has no schema for: they are
# checked against these small schemas of the fields the chart uses (strict where it matters).
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace", "labels"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _LABELS},
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {"type": "object"},
                    "namespaceSelector": {
                        "type": "object",
                        "properties": {
                            "matchNames": {"type": "array", "items": {"type": "string"}}
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["port", "path"],
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "scrapeTimeout": {
                                    "type": "string",
                                    "pattern": "^[0-9]+(ms|s|m|h)$",
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["groups"],
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "properties": {
                                "name": {"type": "string"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["alert", "expr"],
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "expr": {"type": "string"},
                                            "for": {"type": "string"},
                                            "labels": _LABELS,
                                            "annotations": _LABELS,
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


def validate(doc: dict[str, Any]) -> None:
    kind = doc["kind"]
    if kind in CRD_SCHEMAS:
        jsonschema.validate(doc, CRD_SCHEMAS[kind])
        return
    # strict: unknown fields are errors too; a kind without a schema raises, never passes
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_helm_lint_strict_default_values() -> None:
    proc = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict_value_sets(name: str, tmp_path: Path) -> None:
    helm("lint", "--strict", str(CHART), *values_args(VALUE_SETS[name], tmp_path))


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_object_is_valid_kubernetes(name: str, tmp_path: Path) -> None:
    docs = render(VALUE_SETS[name], tmp_path)
    assert docs
    for doc in docs:
        try:
            validate(doc)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        assert doc["metadata"]["namespace"] == NAMESPACE or doc["kind"] == "ConfigMap"
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_a_kind_without_a_schema_is_an_error_not_a_pass() -> None:
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_validation_catches_a_broken_object(tmp_path: Path) -> None:
    deployment = deployments(render({}, tmp_path))["gateway"]
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


PER_COMPONENT = ("Deployment", "Service", "PodDisruptionBudget")


def test_default_objects(tmp_path: Path) -> None:
    docs = render({}, tmp_path)
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted(
        [
            ("ConfigMap", f"{FULL}-config"),
            *[(kind, f"{FULL}-{c}") for c in COMPONENTS for kind in PER_COMPONENT],
            ("HorizontalPodAutoscaler", f"{FULL}-gateway"),
            ("HorizontalPodAutoscaler", f"{FULL}-streams"),
            ("Ingress", FULL),
        ]
    )


@pytest.mark.parametrize("name", ["default", "everything-on"])
def test_pods_are_hardened(name: str, tmp_path: Path) -> None:
    docs = render(VALUE_SETS[name], tmp_path)
    workloads = by_kind(docs, "Deployment") + by_kind(docs, "StatefulSet")
    assert workloads
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts  # the only writable place besides Redis' /data


def test_component_pods(tmp_path: Path) -> None:
    docs = render(VALUE_SETS["everything-on"], tmp_path)
    found = deployments(docs)
    assert sorted(found) == sorted(COMPONENTS)
    for component, deployment in found.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["python", "-m", f"services.{component}"]
        assert container["image"] == "switchboard@sha256:" + "ab" * 32
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "3"]
        assert container["resources"]["requests"]["cpu"]
        assert pod["terminationGracePeriodSeconds"] == 30
        assert pod["imagePullSecrets"] == [{"name": "registry"}]
        assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
        assert pod["tolerations"][0]["key"] == "realtime"
        assert "nodeAffinity" in pod["affinity"]
        spread = pod["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }
        assert all(
            c["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
            for c in spread
        )
        assert "checksum/config" in deployment["spec"]["template"]["metadata"]["annotations"]
        env = container_env(docs, deployment)
        prefix = component.upper()
        assert env[f"{prefix}_HOST"] == "0.0.0.0"
        assert env[f"{prefix}_PORT"] == str(container["ports"][0]["containerPort"])
        assert env[f"{prefix}_SHUTDOWN_TIMEOUT_S"] == "20"
        assert env["HOME"] == env["TMPDIR"] == "/tmp"
        assert env["SECRET_KEY"] == {
            "secretKeyRef": {"name": "switchboard-auth", "key": "SECRET_KEY"}
        }
        # everything-on uses the bundled Redis: Zou's KV_* names, password from the Secret
        assert env["KV_HOST"] == f"{FULL}-redis"
        assert env["KV_PASSWORD"] == {"secretKeyRef": {"name": "sb-redis", "key": "redis-password"}}
        assert "REDIS_URL" not in env
        assert env["SWITCHBOARD_CHANNELS"] == "/etc/switchboard/channels/channels.json"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["channels"] == "/etc/switchboard/channels"
    handlers = found["handlers"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in handlers["containers"][0]["volumeMounts"]}
    assert mounts["handlers"] == "/etc/switchboard/handlers"
    assert mounts["tasks"] == "/etc/switchboard/tasks"
    volumes = {v["name"]: v for v in handlers["volumes"]}
    assert volumes["handlers"]["configMap"]["name"] == "sb-handlers"


def test_ports_and_services(tmp_path: Path) -> None:
    docs = render(VALUE_SETS["everything-on"], tmp_path)
    ports = {
        component_of(s): s["spec"]["ports"][0]["port"]
        for s in by_kind(docs, "Service")
        if component_of(s) in COMPONENTS
    }
    assert ports == {"gateway": 5001, "rooms": 5002, "streams": 7890, "handlers": 5003}


def test_redis_sources(tmp_path: Path) -> None:
    def gateway_env(values: dict[str, Any]) -> dict[str, Any]:
        docs = render(values, tmp_path)
        return container_env(docs, deployments(docs)["gateway"])

    env = gateway_env(VALUE_SETS["external-redis-url"])
    assert env["REDIS_URL"] == "rediss://redis.example.internal:6380/2"
    env = gateway_env(VALUE_SETS["external-redis-secret"])
    assert env["REDIS_URL"] == {"secretKeyRef": {"name": "sb-redis-url", "key": "REDIS_URL"}}
    assert not any(name.startswith("KV_") for name in env)


def test_bundled_redis(tmp_path: Path) -> None:
    docs = render(VALUE_SETS["bundled-redis"], tmp_path)
    redis = one(docs, "StatefulSet", f"{FULL}-redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    script = container["command"][-1]
    assert "requirepass" in script and "$REDISCLI_AUTH" in script
    assert "--appendonly yes" in script  # persistence on in this value set
    assert container["env"] == [
        {
            "name": "REDISCLI_AUTH",
            "valueFrom": {"secretKeyRef": {"name": "sb-redis", "key": "redis-password"}},
        }
    ]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    service = one(docs, "Service", f"{FULL}-redis")
    assert service["spec"]["ports"][0]["port"] == 6379
    policy = one(docs, "NetworkPolicy", f"{FULL}-redis")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "redis", "protocol": "TCP"}]
    assert not by_kind(docs, "Secret")  # the chart never creates Secrets


def test_no_value_set_creates_a_secret(tmp_path: Path) -> None:
    for values in VALUE_SETS.values():
        assert not by_kind(render(values, tmp_path), "Secret")


def _routes(ingress: dict[str, Any]) -> dict[str, str]:
    (rule, *others) = ingress["spec"]["rules"]
    for other in others:
        assert other["http"] == rule["http"]
    return {
        p["path"]: p["backend"]["service"]["name"].removeprefix(f"{FULL}-")
        for p in rule["http"]["paths"]
    }


def test_ingress_routes_and_annotations(tmp_path: Path) -> None:
    docs = render(VALUE_SETS["everything-on"], tmp_path)
    ingress = one(docs, "Ingress", FULL)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert _routes(ingress) == {
        "/ws": "gateway",
        "/socket.io": "gateway",
        "/zeph": "gateway",
        "/api": "gateway",
        "/data": "streams",
        "/streams": "streams",
        "/token": "streams",
        "/frames": "streams",
        "/labels": "streams",
        "/mjpeg": "streams",
        "/ws/labels": "streams",
        "/ws/stream": "streams",
        "/ws/frames": "streams",
        "/rooms": "rooms",
    }
    assert all(p["pathType"] == "Prefix" for p in ingress["spec"]["rules"][0]["http"]["paths"])
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert notes["nginx.ingress.kubernetes.io/proxy-http-version"] == "1.1"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600


def test_ingress_routes_follow_enabled_components(tmp_path: Path) -> None:
    everything = _routes(one(render(VALUE_SETS["everything-on"], tmp_path), "Ingress", FULL))
    assert _routes(one(render({}, tmp_path), "Ingress", FULL)) == everything
    routes = _routes(one(render({"streams": {"enabled": False}}, tmp_path), "Ingress", FULL))
    assert routes == {path: c for path, c in everything.items() if c != "streams"}


def test_ingress_tls(tmp_path: Path) -> None:
    ingress = one(render(VALUE_SETS["tls"], tmp_path), "Ingress", FULL)
    assert ingress["spec"]["tls"] == [
        {"secretName": "rt-example-tls", "hosts": ["rt.example.com", "events.example.com"]}
    ]
    assert [r["host"] for r in ingress["spec"]["rules"]] == ["rt.example.com", "events.example.com"]


def test_autoscaling_leaves_replicas_out(tmp_path: Path) -> None:
    docs = render({}, tmp_path)
    found = deployments(docs)
    assert "replicas" not in found["gateway"]["spec"]
    assert found["rooms"]["spec"]["replicas"] == 2
    hpa = one(docs, "HorizontalPodAutoscaler", f"{FULL}-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{FULL}-gateway"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    pdb = one(docs, "PodDisruptionBudget", f"{FULL}-gateway")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_everything_on_has_every_optional_object(tmp_path: Path) -> None:
    docs = render(VALUE_SETS["everything-on"], tmp_path)
    kinds = {d["kind"] for d in docs}
    assert {
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "StatefulSet",
        "Ingress",
        "HorizontalPodAutoscaler",
    } <= kinds
    assert {component_of(h) for h in by_kind(docs, "HorizontalPodAutoscaler")} == set(COMPONENTS)
    assert len(by_kind(docs, "NetworkPolicy")) == len(COMPONENTS) + 1
    dashboard = one(docs, "ConfigMap", f"{FULL}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["switchboard.json"] == (
        CHART / "dashboards/switchboard.json"
    ).read_text().rstrip("\n")
    rule = one(docs, "PrometheusRule", FULL)
    alerts = yaml.safe_load((CHART / "rules/alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]  # the file as it is, Prometheus templates too
    monitor = one(docs, "ServiceMonitor", FULL)
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_everything_off(tmp_path: Path) -> None:
    docs = render(VALUE_SETS["everything-off"], tmp_path)
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "Service"]
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert "topologySpreadConstraints" not in deployment["spec"]["template"]["spec"]


def test_public_key_auth_mounts_the_keys(tmp_path: Path) -> None:
    docs = render(VALUE_SETS["public-keys"], tmp_path)
    deployment = deployments(docs)["gateway"]
    env = container_env(docs, deployment)
    assert "SECRET_KEY" not in env
    assert env["JWT_ALGORITHMS"] == "RS256,ES256"
    assert env["JWT_PUBLIC_KEY_FILE"] == "/etc/switchboard/jwt/public.pem"
    assert env["JWT_PRIVATE_KEY_FILE"] == "/etc/switchboard/jwt/private.pem"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["jwt"]["secret"]["secretName"] == "switchboard-auth"


def test_config_checksum_follows_the_config(tmp_path: Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = deployments(render(values, tmp_path))["gateway"]
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    base = checksum({})
    assert checksum({}) == base
    assert checksum({"logLevel": "DEBUG"}) != base
    assert checksum({"channels": {"namespaces": {"chat": {"allow_publish": True}}}}) != base


def test_notes_tell_how_to_mint_a_token_and_connect(tmp_path: Path) -> None:
    proc = helm(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        *values_args(VALUE_SETS["tls"], tmp_path),
    )
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"exec deploy/{FULL}-gateway -- switchboard token --sub alice" in notes
    assert "wss://rt.example.com/ws" in notes
    assert "create secret generic switchboard-auth" in notes


# ---- values the chart must refuse -----------------------------------------------------------

BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "wrong type": ({"gateway": {"port": "5001"}}, "want integer"),
    "wrong type, bool": ({"ingress": {"enabled": "yes"}}, "want boolean"),
    "unknown top-level key": ({"replicas": 3}, "additional properties 'replicas'"),
    "unknown nested key": ({"gateway": {"replica": 3}}, "additional properties 'replica'"),
    "unknown settings key": (
        {"gateway": {"settings": {"heartbeat": 5}}},
        "additional properties 'heartbeat'",
    ),
    "unknown rooms settings key": (
        {"rooms": {"settings": {"maxMembers": 5}}},
        "additional properties 'maxMembers'",
    ),
    "unknown streams settings key": (
        {"streams": {"settings": {"retention": 5}}},
        "additional properties 'retention'",
    ),
    "bad stream access": ({"streams": {"settings": {"defaultAccess": "all"}}}, "defaultAccess"),
    "bad isolation": ({"handlers": {"settings": {"isolation": "fork"}}}, "isolation"),
    "a secret in extraEnv": ({"gateway": {"extraEnv": {"SECRET_KEY": "x" * 40}}}, "SECRET_KEY"),
    "a password in redis.url": ({"redis": {"url": "redis://:hunter2@redis:6379/0"}}, "/redis/url"),
    "unknown algorithm": ({"auth": {"algorithms": ["none"]}}, "/auth/algorithms"),
    "bad log level": ({"logLevel": "loud"}, "/logLevel"),
    "shutdown budget": (
        {"gateway": {"terminationGracePeriodSeconds": 23}},
        "gateway.terminationGracePeriodSeconds (23) must exceed shutdownTimeoutSeconds (20)"
        " + preStopSleepSeconds (3)",
    ),
    "shutdown budget of another component": (
        {"rooms": {"shutdownTimeoutSeconds": 40}},
        "rooms.terminationGracePeriodSeconds (30) must exceed",
    ),
    "bundled Redis without a password Secret": (
        {"redis": {"bundled": True}},
        "redis.bundledServer.passwordSecret",
    ),
    "two Redis sources": (
        {"redis": {"bundled": True, "existingSecret": "x"}},
        "not both",
    ),
    "no Redis at all": ({"redis": {"url": ""}}, "set redis.url, redis.existingSecret"),
    "TLS without a Secret": ({"ingress": {"tls": {"enabled": True}}}, "ingress.tls.secretName"),
    "mixed algorithms": ({"auth": {"algorithms": ["HS256", "RS256"]}}, "do not mix"),
    "HPA min above max": (
        {"gateway": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}},
        "maxReplicas must be >= minReplicas",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_refused(case: str, tmp_path: Path) -> None:
    values, message = BAD_VALUES[case]
    assert message in render_error(values, tmp_path)


def test_a_good_budget_passes(tmp_path: Path) -> None:
    values = {"gateway": {"terminationGracePeriodSeconds": 24}}
    assert template(values, tmp_path).returncode == 0
    values = merged(values, {"gateway": {"preStopSleepSeconds": 0, "shutdownTimeoutSeconds": 23}})
    assert template(values, tmp_path).returncode == 0
