"""The dependency direction of DESIGN/STYLE, checked on the import statements themselves."""

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"
# No aiohttp, no redis: usable anywhere, testable without I/O.
PURE = {"errors.py", "channels.py", "rooms.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((SERVICES / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("common"), ids=lambda p: p.name)
def test_common_never_imports_a_service(path: Path) -> None:
    bad = {
        m
        for m in _imports(path)
        if m.startswith("services.") and not m.startswith("services.common")
    }
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize(
    "path", [p for p in _modules("common") if p.name in PURE], ids=lambda p: p.name
)
def test_pure_modules_import_neither_aiohttp_nor_redis(path: Path) -> None:
    bad = {m for m in _imports(path) if m.split(".")[0] in {"aiohttp", "redis"}}
    assert not bad, f"{path.name} imports {bad}"


# The command line drives the services from outside; what it may use of theirs is listed here.
CLI_USES = {"services.streams.users"}


@pytest.mark.parametrize(
    "path",
    [p for p in SERVICES.rglob("*/*.py") if p.relative_to(SERVICES).parts[0] != "common"],
    ids=lambda p: "/".join(p.relative_to(SERVICES).parts),
)
def test_a_service_never_imports_another(path: Path) -> None:
    parts = path.relative_to(SERVICES).parts
    own = parts[0]
    allowed = CLI_USES if own == "cli" else set()
    bad = {
        m
        for m in _imports(path)
        if m.startswith("services.") and m.split(".")[1] not in {"common", own} and m not in allowed
    }
    assert not bad, f"{'/'.join(parts)} imports {bad}"
