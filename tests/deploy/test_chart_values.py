"""values.yaml against values.schema.json (jsonschema), `## @param` docs on every value, and the
Grafana dashboard and alert rules naming metrics the services export."""

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import yaml

from tests.deploy.chartkit import CHART, COMPONENTS, SERVICES, walk_values

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def test_the_schema_is_valid_and_accepts_values_yaml() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.Draft7Validator(SCHEMA).validate(VALUES)


def _objects(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, value in node.items():
            yield from _objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _objects(value, f"{path}/{index}")


def test_every_object_in_the_schema_closes_its_keys() -> None:
    """additionalProperties false, or a schema for the values of a user-keyed map (labels,
    extraEnv, channel namespaces); a bare {"type": "object"} is allowed only for the
    Kubernetes-shaped pass-throughs that kubernetes-validate checks after rendering."""
    passthrough = re.compile(
        r"(nodeAffinity|podAffinity|podAntiAffinity|podSelector|namespaceSelector|ipBlock)$"
        r"|/component/properties/settings$"
    )
    for path, node in _objects(SCHEMA):
        if "additionalProperties" in node:
            continue
        assert passthrough.search(path), f"{path} accepts unknown keys"


def test_components_have_the_same_shape() -> None:
    shapes = {c: set(VALUES[c]) for c in COMPONENTS}
    assert len({frozenset(s) for s in shapes.values()}) == 1, shapes
    for component in COMPONENTS:
        assert SCHEMA["properties"][component]["allOf"][0] == {"$ref": "#/definitions/component"}


def _documented() -> set[str]:
    return set(re.findall(r"^\s*## @param ([\w.]+) \S", VALUES_TEXT, flags=re.M))


def test_every_value_has_a_param_line() -> None:
    documented = _documented()
    for path, _ in walk_values(VALUES):
        parts = path.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        assert prefixes & documented, f"{path} has no ## @param line"


def test_every_param_line_names_a_value() -> None:
    for name in _documented():
        node: Any = VALUES
        for part in name.split("."):
            assert isinstance(node, dict) and part in node, f"## @param {name}: no such value"
            node = node[part]


def test_values_yaml_holds_no_secret() -> None:
    for path, value in walk_values(VALUES):
        if isinstance(value, str) and re.search(r"(password|secret|token)$", path, re.I):
            # only names of Secrets (or keys in them) may appear under such paths
            assert re.fullmatch(r"[-a-z0-9.]*", value), f"{path} looks like a secret value"
    assert "@" not in VALUES["redis"]["url"]


def _exported_metrics() -> set[str]:
    names: set[str] = set()
    for path in SERVICES.rglob("metrics.py"):
        text = path.read_text()
        for kind, name in re.findall(
            r"(Counter|Gauge|Histogram)\w*\(\s*\"(switchboard_\w+)\"", text
        ):
            names.add(f"{name}_total" if kind == "Counter" else name)
            if kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_dashboard_is_valid_and_uses_exported_metrics() -> None:
    dashboard = json.loads((CHART / "dashboards" / "switchboard.json").read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["panels"]
    exported = _exported_metrics()
    assert "switchboard_gateway_connections" in exported
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for metric in re.findall(r"\bswitchboard_\w+", target["expr"]):
                assert metric in exported, f"{panel['title']}: {metric} is not exported"


def test_alert_rules_use_exported_metrics() -> None:
    rules = (CHART / "rules" / "alerts.yml").read_text()
    metrics = set(re.findall(r"\bswitchboard_\w+", rules))
    assert metrics
    assert metrics <= _exported_metrics()
