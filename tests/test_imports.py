"""Every minids module imports on its own in a fresh interpreter, and the imports that run at import time (module
level, not inside functions) form no circle: whichever module a user or a notebook imports first, it loads.

The model's own modules form no circle even counting the imports inside functions: attention used to import the
fast paths (for the recompile limit), which import training, which imports the model, which imports the layer,
which imports attention; the recompile limit now lives in recompile.py, which imports nothing of minids."""

import ast
import os
import pathlib
import subprocess
import sys

import minids

ROOT = pathlib.Path(minids.__file__).parent


def module_names() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def module_level_imports(name: str) -> set[str]:
    """The minids modules `name` imports when it loads: top-level statements, including those inside a
    top-level try/if (import fallbacks), not those inside functions or classes."""
    is_package = name.count(".") == 0 or (ROOT.parent / name.replace(".", "/") / "__init__.py").exists()
    path = ROOT.parent / (name.replace(".", "/") + ("/__init__.py" if is_package else ".py"))
    package = name if is_package else name.rsplit(".", 1)[0]
    known = set(module_names())
    nodes = []
    for node in ast.parse(path.read_text()).body:
        nodes.extend(ast.walk(node) if isinstance(node, (ast.Try, ast.If)) else [node])
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {module} & known
            found |= {f"{module}.{alias.name}" for alias in node.names} & known
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names} & known
    return found - {name}


def test_module_list_is_the_package():
    names = module_names()
    assert "minids" in names and "minids.attention" in names and "minids.pipeline.session" in names
    assert len(names) == len(set(names)) > 40


def test_no_module_level_import_circle():
    graph = {name: module_level_imports(name) for name in module_names()}
    assert "minids.layer" in graph["minids.model"] and "minids.attention" in graph["minids.layer"]
    assert "minids.fast" not in graph["minids.attention"]
    state: dict[str, str] = {}  # depth-first search: "open" while on the current path, "done" after

    def visit(name, path):
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                raise AssertionError("module-level import circle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])


# One interpreter loads the heavy third-party libraries (torch alone takes seconds), then forks one child per module:
# each child starts with no minids module loaded, which is what a fresh interpreter means for an import circle.
_FORK_EACH = """
import os, sys, traceback
import torch, einops, numpy  # loaded once, shared by every child
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        assert not any(m == "minids" or m.startswith("minids.") for m in sys.modules)
        try:
            __import__(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print("FAILED:", " ".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    names = [n for n in module_names() if not n.endswith("__main__")]  # __main__ runs a CLI when imported
    env = dict(os.environ, PYTHONPATH=str(ROOT.parent))
    done = subprocess.run([sys.executable, "-c", _FORK_EACH, *names], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, f"{done.stdout[-300:]}\n{done.stderr[-3000:]}"
    assert done.stdout.strip() == "FAILED:"


def all_imports(name: str) -> set[str]:
    """The minids modules `name` imports anywhere in its source, inside functions too."""
    is_package = name.count(".") == 0 or (ROOT.parent / name.replace(".", "/") / "__init__.py").exists()
    path = ROOT.parent / (name.replace(".", "/") + ("/__init__.py" if is_package else ".py"))
    package = name if is_package else name.rsplit(".", 1)[0]
    known, found = set(module_names()), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
            found |= ({module} | {f"{module}.{alias.name}" for alias in node.names}) & known
    return found - {name}


def test_the_model_modules_form_no_circle_even_inside_functions():
    graph = {name: all_imports(name) for name in module_names()}
    assert "minids.fast" not in graph["minids.attention"] and "minids.recompile" in graph["minids.attention"]

    def reaches(start, goal, seen=()):
        return any(dep == goal or (dep not in seen and reaches(dep, goal, (*seen, dep))) for dep in graph[start])

    for name in ("minids.attention", "minids.layer", "minids.model", "minids.train", "minids.fast"):
        assert not reaches(name, name), f"{name} imports itself through a circle of minids modules"
