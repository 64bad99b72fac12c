"""The engine's import graph: every module imports alone, no cycles, suites know nothing of asv."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def module_names() -> list[str]:
    names = []
    for path in sorted(HARNESS.rglob("*.py")):
        rel = path.relative_to(HARNESS.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _module_path(name: str) -> Path:
    base = HARNESS.parent.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def imports_of(name: str) -> set[str]:
    """harness modules that ``name`` imports, at any level (lazy imports in functions included)."""
    path = _module_path(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    known = set(module_names())
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # imports for type checkers only do not count
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            # the deepest known harness module named by the import
            while t and t not in known:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name:
                out.add(t)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_the_engine():
    # a package imports its submodules by design (harness -> harness.declare.suite); edges from a
    # package's __init__ are left out, the rest must form no cycle
    graph = {n: {m for m in imports_of(n) if not m.startswith(n + ".")} for n in module_names()}
    graph = {n: deps - {"harness"} for n, deps in graph.items()}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_declaration_layer_and_measurement_import_no_engine_above_them():
    # the DSL re-exports the timing settings from where they are read, and imports nothing else
    assert imports_of("harness.declare.suite") == {"harness.measure.timing"}
    assert imports_of("harness.declare.registry") <= {"harness.declare.suite"}
    for name in module_names():  # measurement stands on its own (paths: where files go)
        if name.startswith("harness.measure"):
            assert not {m for m in imports_of(name) if not m.startswith("harness.measure")} - {"harness.paths"}, name


# The floors of the engine, bottom up: a module imports only modules on lower floors (or its own
# folder). The README's developer map describes the same order.
FLOORS = (
    ("harness.paths",),
    ("harness.measure", "harness.metrics", "harness.artifacts"),
    ("harness.declare",),
    ("harness.key",),
    ("harness.plan", "harness.results"),
    ("harness.run", "harness.judge"),
    ("harness.present",),
    ("harness.cli", "harness.asv_adapter", "harness.export", "harness.asv_html", "harness"),
    ("harness.__main__",),
)


def floor_of(name: str) -> tuple[int, str]:
    best = (-1, "")
    for i, parts in enumerate(FLOORS):
        for part in parts:
            if (name == part or name.startswith(part + ".")) and len(part) > len(best[1]):
                best = (i, part)
    assert best[0] >= 0, f"{name} is on no floor: add it to FLOORS and to the README's map"
    return best


def test_every_import_goes_down_the_floors():
    upward = []
    for name in module_names():
        level, part = floor_of(name)
        for dep in imports_of(name):
            dep_level, dep_part = floor_of(dep)
            if dep_part != part and dep_level >= level and not dep.startswith(name + "."):
                upward.append(f"{name} -> {dep}")
    assert not upward, upward


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in module_names() if n != "harness.__main__"])  # that one runs
def test_every_module_imports_alone(name):
    out = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=300,
                         cwd=HARNESS.parent)
    assert out.returncode == 0, out.stderr[-2000:]


def test_defining_a_suite_loads_no_asv_code_and_reads_no_environment():
    code = """if True:
        import os, sys
        seen = []
        class Spy(dict):
            def get(self, k, *a):
                seen.append(k); return super().get(k, *a)
            def __getitem__(self, k):
                seen.append(k); return super().__getitem__(k)
        from harness import Suite, Workload, variant
        os.environ = Spy(os.environ)
        class T(Suite):
            name = "t"; grid = {"n": [1]}
            @variant()
            def a(self, state, params): return Workload(lambda: None)
        asv = [m for m in sys.modules if m == "asv" or m.startswith(("asv.", "asv_runner", "harness.asv"))]
        assert not asv, asv
        assert not seen, seen
        print("ok")
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=HARNESS.parent)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_fingerprint_reads_versions_without_importing_the_packages():
    """Package versions come from their metadata: building a run's fingerprint imports none of
    diffusers, torch-fidelity, pycocotools or torchvision, and the CPU's model and flags come
    from py-cpuinfo."""
    code = (
        "import sys, json\n"
        "from harness.measure.environment import fingerprint\n"
        "env = fingerprint('cpu')\n"
        "print(json.dumps({'loaded': sorted(m for m in ('diffusers', 'torch_fidelity', 'pycocotools', 'torchvision')"
        " if m in sys.modules), 'versions': {k: v for k, v in env.items() if k.endswith('_version')},"
        " 'cpu': env['cpu'], 'flags': len(env.get('cpu_flags') or [])}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    import json
    from importlib import metadata

    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert out["versions"]["diffusers_version"] == metadata.version("diffusers")
    assert out["versions"]["torch_fidelity_version"] == metadata.version("torch-fidelity")
    assert out["cpu"] and out["flags"] > 0


def test_the_cache_folder_follows_xdg_and_the_harness_variable(tmp_path, monkeypatch):
    from harness.paths import cache_dir

    monkeypatch.delenv("HARNESS_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("detection") == tmp_path / "xdg" / "dl-harness" / "detection"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir("detection") == tmp_path / "mine" / "detection"
    assert (tmp_path / "mine" / "detection").is_dir()


def readme_map() -> dict[str, str]:
    """The README's map of the engine ("Developing: where things are"): each entry's names -> its
    description (continuation lines joined)."""
    text = (HARNESS.parent / "README.md").read_text()
    section = text.split("## Developing: where things are", 1)[1]
    block = section.split("```", 2)[1]
    entries: dict[str, str] = {}
    names = None
    for line in block.splitlines():
        if not line.strip():
            continue
        if line[0].isspace():  # a description carried on
            entries[names] += " " + line.strip()
            continue
        head, _, description = line.partition("  ")
        names = head.strip()
        entries[names] = description.strip()
    return entries


def test_the_readme_map_names_every_part_of_the_engine_and_nothing_else():
    entries = readme_map()
    named = {n.strip() for names in entries for n in names.split(",")}
    for name in named:
        assert (HARNESS / name.rstrip("/")).exists(), f"the README's map names {name}, which is not in harness/"
    described = " ".join(entries.values())
    aliases = {"export.py", "asv_html.py"}  # old paths, kept and named in the paragraph after the map
    for path in sorted(HARNESS.iterdir()):
        if path.name.startswith("__") or path.name in aliases or path.suffix not in ("", ".py"):
            continue
        label = path.name + "/" if path.is_dir() else path.name
        assert label in named or label in described, f"harness/{label} is missing from the README's map"
    for names, description in entries.items():
        if not names.endswith("/"):
            continue
        folder = HARNESS / names.rstrip("/")
        for module in sorted(folder.glob("*.py")):
            if module.stem == "__init__":
                continue
            assert re.search(rf"\b{module.stem}\b", description, re.IGNORECASE), (
                f"harness/{names}{module.name} is missing from the README's map")
        for mentioned in re.findall(r"\b(\w+)\.py\b", description):
            assert (folder / f"{mentioned}.py").exists(), f"the README's map names {names}{mentioned}.py, which is not there"
