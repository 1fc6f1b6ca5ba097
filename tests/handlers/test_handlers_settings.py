"""Settings: defaults, Zou's variable names, and one clear error per bad value."""

from pathlib import Path

import pytest

from services.common.settings import SettingsError
from services.handlers.settings import HandlersSettings, Isolation
from tests.conftest import SECRET

BASE = {"REDIS_URL": "redis://127.0.0.1:6379/0", "SECRET_KEY": SECRET}


def test_defaults() -> None:
    settings = HandlersSettings.from_env(BASE)
    assert settings.port == 5003
    assert settings.handlers_folder == Path("./event_handlers")
    assert settings.tasks_folder == Path("./tasks")
    assert settings.isolation is Isolation.THREAD
    assert (settings.retries, settings.handler_timeout_s, settings.task_timeout_s) == (3, 30, 10)
    assert settings.consumer.endswith(":5003")


def test_zou_variables_and_overrides() -> None:
    settings = HandlersSettings.from_env(
        {
            **BASE,
            "EVENT_HANDLERS_FOLDER": "/opt/zou/event_handlers",
            "TASKS_FOLDER": "/srv/tasks",
            "HANDLERS_ISOLATION": "Process",
            "HANDLERS_RETRIES": "0",
            "HANDLERS_PORT": "6003",
        }
    )
    assert settings.handlers_folder == Path("/opt/zou/event_handlers")
    assert settings.tasks_folder == Path("/srv/tasks")
    assert settings.isolation is Isolation.PROCESS
    assert settings.retries == 0
    assert settings.consumer.endswith(":6003")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HANDLERS_ISOLATION", "fork"),
        ("HANDLERS_PORT", "70000"),
        ("HANDLERS_RETRIES", "-1"),
        ("HANDLERS_TIMEOUT_S", "0"),
        ("HANDLERS_THREADS", "many"),
        ("HANDLERS_PROCESSES", "0"),
        ("HANDLERS_BLOCK_MS", "20000"),
        ("HANDLERS_CONCURRENCY", "0"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        HandlersSettings.from_env({**BASE, name: value})
