"""Reads the handlers and tasks folders into a `Registry`.

Three handler forms, all in `EVENT_HANDLERS_FOLDER`:

- Zou's package: the folder itself has `__init__.py`, or it holds `event_handlers/__init__.py`;
  the package defines `event_map = {"task:new": module, "task:*": module, ...}`. Zou imports it
  as `event_handlers` after putting the folder on `sys.path`; so do we, so that an unmodified
  package (relative imports, `import event_handlers.x`, or plain `import sibling`) loads.
- one file per event, `on_<event with ':' and '-' as '_'>.py`, with `handle_event`;
- patterns (`task:*`, `*`) as event_map keys.

Tasks are `TASKS_FOLDER/task_<name>.py` with `run(request)`.

One file that fails to import (syntax error, an exception at import) becomes a `LoadError` and
is skipped; the others load. Files are compiled from source on every load and no bytecode is
written, so a file changed twice within the same second is never served from a stale cache.
"""

import importlib
import importlib.util
import inspect
import sys
import traceback
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .api import requirement_of
from .registry import Handler, LoadError, Registry, Task

PACKAGE = "event_handlers"
_FILE_MODULE_PREFIX = "_switchboard_handler_"
_TASK_MODULE_PREFIX = "_switchboard_task_"
_NEVER_FORGET = frozenset({"services", "tests", "bench"})


def load(handlers_folder: Path, tasks_folder: Path, generation: int) -> Registry:
    with _no_bytecode():
        forget(handlers_folder)
        forget(tasks_folder)
        importlib.invalidate_caches()
        handlers, errors = load_handlers(handlers_folder)
        tasks, task_errors = load_tasks(tasks_folder)
    return Registry(generation, handlers, tasks, errors + task_errors)


def load_handlers(folder: Path) -> tuple[list[Handler], list[LoadError]]:
    folder = folder.resolve()
    handlers: list[Handler] = []
    errors: list[LoadError] = []
    if not folder.is_dir():
        return handlers, errors
    root = _package_root(folder)
    if root is not None:
        _load_package(folder, root, handlers, errors)
    for path in sorted(folder.glob("on_*.py")):
        try:
            module = _exec_file(path, _FILE_MODULE_PREFIX + path.stem)
            handlers.append(_handler(path.stem[3:].lower(), path.stem, "file", path, module))
        except Exception as exc:  # the per-file boundary: any import failure skips the file
            errors.append(_error(path, exc))
    return handlers, errors


def load_tasks(folder: Path) -> tuple[dict[str, Task], list[LoadError]]:
    folder = folder.resolve()
    tasks: dict[str, Task] = {}
    errors: list[LoadError] = []
    if not folder.is_dir():
        return tasks, errors
    for path in sorted(folder.glob("task_*.py")):
        try:
            module = _exec_file(path, _TASK_MODULE_PREFIX + path.stem[5:])
            run = getattr(module, "run", None)
            if not callable(run):
                raise TypeError("a task file must define run(request)")
            name = path.stem[5:]
            tasks[name] = Task(
                name=name,
                file=str(path),
                fn=run,
                is_async=inspect.iscoroutinefunction(run),
                requirement=requirement_of(run),
                timeout_s=_timeout(module),
            )
        except Exception as exc:  # the per-file boundary
            errors.append(_error(path, exc))
    return tasks, errors


def forget(folder: Path) -> None:
    """Drop every module loaded from `folder` so that the next import reads the files again."""
    try:
        folder = folder.resolve()
    except OSError:
        return
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in _NEVER_FORGET:
            continue  # a folder set to the project's own root must not unload the service
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and Path(file).is_relative_to(folder):
            del sys.modules[name]


def _package_root(folder: Path) -> Path | None:
    if (folder / "__init__.py").is_file():
        return folder
    if (folder / PACKAGE / "__init__.py").is_file():
        return folder / PACKAGE
    return None


def _load_package(
    folder: Path, root: Path, handlers: list[Handler], errors: list[LoadError]
) -> None:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # as Zou does: siblings import each other by name
    init = root / "__init__.py"
    # Another folder's package of the same name (an earlier load) must not lend its modules.
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    try:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, init, submodule_search_locations=[str(root)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
        event_map = getattr(package, "event_map", None)
        if not isinstance(event_map, dict):
            raise TypeError("the package must define event_map = {event: module, ...}")
    except Exception as exc:  # the package boundary: its handlers are skipped, files still load
        forget(root)
        errors.append(_error(init, exc))
        return
    for key, value in event_map.items():
        targets = value if isinstance(value, list | tuple) else [value]
        for target in targets:
            name = str(getattr(target, "__name__", type(target).__name__)).rsplit(".", 1)[-1]
            try:
                file = Path(getattr(target, "__file__", None) or init)
                handlers.append(_handler(str(key), name, "package", file, target))
            except Exception as exc:  # a bad entry is skipped, the rest of the map loads
                errors.append(_error(init, exc, f"event_map[{key!r}]: "))
    # Zou: the same module name for the same event overwrites; keep the last one.
    seen: dict[str, int] = {}
    for i, handler in enumerate(handlers):
        seen[handler.id] = i
    handlers[:] = [h for i, h in enumerate(handlers) if seen[h.id] == i]


def _handler(key: str, name: str, kind: str, file: Path, target: Any) -> Handler:
    fn = getattr(target, "handle_event", None)
    if not callable(fn):
        raise TypeError(f"{name} has no handle_event(data)")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]  # a builtin: called with data only
    return Handler(
        id=f"{key}/{name}" if kind == "package" else name,
        key=key,
        name=name,
        kind=kind,
        file=str(file),
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        wants_event="event" in params,
        timeout_s=_timeout(target),
    )


def _exec_file(path: Path, module_name: str) -> types.ModuleType:
    source = path.read_bytes()
    code = compile(source, str(path), "exec", dont_inherit=True)
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)
    except Exception:
        sys.modules.pop(module_name, None)
        raise
    return module


def _timeout(target: Any) -> float | None:
    value = getattr(target, "TIMEOUT", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _error(path: Path, exc: Exception, prefix: str = "") -> LoadError:
    message = "".join(traceback.format_exception_only(exc)).strip().replace("\n", " | ")
    return LoadError(
        file=str(path), error=prefix + message, traceback="".join(traceback.format_exception(exc))
    )


@contextmanager
def _no_bytecode() -> Iterator[None]:
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Path -> (mtime_ns, size) of every .py file under `folders`: what the watcher compares."""
    seen: dict[str, tuple[int, int]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            seen[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return seen
