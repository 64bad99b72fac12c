"""Finding suites: discovery of ``suites/*.py`` and of user files or folders.

Duplicate names raise, unknown names get "did you mean", and a file that fails to import is
reported (the other suites still load), never silently dropped.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .suite import Suite, SuiteDefinitionError

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "suites"


class RegistryError(Exception):
    """A suite name or path the user gave cannot be resolved."""


@dataclass
class LoadFailure:
    """A suite file that could not be imported or whose suite is declared wrongly."""

    path: str
    error: str
    traceback: str = ""


@dataclass
class Registry:
    """Suites by name, plus the files that failed to load."""

    suites: dict[str, type[Suite]] = field(default_factory=dict)
    failures: list[LoadFailure] = field(default_factory=list)
    frozen: bool = False
    origins: dict[str, str] = field(default_factory=dict)  # suite name -> file it was loaded from

    def add(self, cls: type[Suite], origin: str) -> None:
        if self.frozen:
            raise RegistryError("the suite registry is frozen after discovery")
        name = cls.suite_name()
        if name in self.suites and self.suites[name] is not cls:
            other = inspect.getsourcefile(self.suites[name]) or "?"
            raise RegistryError(f"duplicate suite name {name!r}: in {origin} and in {other}")
        self.suites[name] = cls
        self.origins[name] = origin

    def get(self, name: str) -> type[Suite]:
        if name in self.suites:
            return self.suites[name]
        failed = [f for f in self.failures if Path(f.path).stem == name]
        if failed:
            raise RegistryError(f"suite {name!r} failed to load: {failed[0].error}")
        raise RegistryError(f"unknown suite {name!r}{suggest(name, self.suites)}")

    def names(self) -> list[str]:
        return sorted(self.suites)

    def from_path(self, path: str | Path) -> tuple[list[type[Suite]], list[LoadFailure]]:
        """Suites loaded from a file, or from the files of a folder, and the files that failed."""
        target = Path(path).resolve()

        def inside(p: str) -> bool:
            q = Path(p).resolve()
            return q == target or target in q.parents

        classes = [self.suites[n] for n, origin in self.origins.items() if inside(origin)]
        return classes, [f for f in self.failures if inside(f.path)]


def suggest(name: str, choices) -> str:
    """A ' (did you mean ...?)' suffix naming close matches, or a list of the choices."""
    choices = list(choices)
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3, cutoff=0.5)
    if close:
        return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
    if choices and len(choices) <= 12:
        return " (choose from " + ", ".join(repr(str(c)) for c in choices) + ")"
    return ""


def _module_name_for(path: Path) -> str:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"harness_user_suites.{path.stem}_{digest}"


def import_file(path: Path):
    """Import a Python file as a module (for user suites outside the project)."""
    path = path.resolve()
    if BUILTIN_DIR in path.parents and path.parent == BUILTIN_DIR:
        return importlib.import_module(f"suites.{path.stem}")
    name = _module_name_for(path)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Let a user's suite import its neighbours.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def suites_in_module(module) -> list[type[Suite]]:
    """Suite subclasses defined (not merely imported) in a module."""
    found = []
    for _, obj in vars(module).items():
        if inspect.isclass(obj) and issubclass(obj, Suite) and obj is not Suite and obj.__module__ == module.__name__:
            if getattr(obj, "abstract", False) and "abstract" in vars(obj):
                continue
            found.append(obj)
    return found


def _load_file(reg: Registry, path: Path) -> list[type[Suite]]:
    try:
        module = import_file(path)
        classes = suites_in_module(module)
        for cls in classes:
            cls.validate()
    except (Exception, SystemExit) as exc:  # a broken suite file must not stop the others
        reg.failures.append(
            LoadFailure(str(path), f"{type(exc).__name__}: {exc}", traceback.format_exc())
        )
        return []
    for cls in classes:
        reg.add(cls, str(path))
    return classes


def suite_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def discover(extra: list[str | Path] | None = None, builtin: bool = True) -> Registry:
    """Load the project's suites and any user files or folders given in ``extra``."""
    reg = Registry()
    if builtin and BUILTIN_DIR.is_dir():
        root = str(BUILTIN_DIR.parent)
        if root not in sys.path:
            sys.path.insert(0, root)
        for path in suite_files(BUILTIN_DIR):
            _load_file(reg, path)
    for item in extra or []:
        path = Path(item)
        if not path.exists():
            raise RegistryError(f"no such suite file or folder: {item}")
        files = suite_files(path) if path.is_dir() else [path]
        if path.is_file() and path.suffix != ".py":
            raise RegistryError(f"not a Python file: {item}")
        for f in files:
            _load_file(reg, f)
    reg.frozen = True
    return reg


def load_suite_class(path: str, qualname: str) -> type[Suite]:
    """Re-import one suite class by file and class name (used by worker processes)."""
    module = import_file(Path(path))
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def class_location(cls: type[Suite]) -> tuple[str, str]:
    path = inspect.getsourcefile(cls)
    if path is None:
        raise SuiteDefinitionError(f"cannot locate the source file of {cls!r}")
    return path, cls.__qualname__
