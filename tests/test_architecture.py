"""The package's layers: imports run one way, and there are no cycles.

Every ``import`` in liftlearn's source is read with ``ast`` (those inside
functions too, which is where hidden cycles live), mapped to its layer, and
checked against the rule in the README's "Development" section::

    base (exceptions, _validation, _device, _labels)
      <- data (data, transforms)      <- metrics, datasets (leaves)
      <- nn <- engine <- estimators <- persistence <- cli
    compat: the old module paths, re-exports that nothing imports
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "liftlearn"

# Module (or package prefix) -> layer; the longest matching prefix wins.
LAYER_OF = {
    "liftlearn": "top",
    "liftlearn.__main__": "cli",
    "liftlearn.exceptions": "base",
    "liftlearn._validation": "base",
    "liftlearn._device": "base",
    "liftlearn._labels": "base",
    "liftlearn._logging": "base",
    "liftlearn._io": "base",
    "liftlearn._random": "base",
    "liftlearn.data": "data",
    "liftlearn.image_sources": "data",
    "liftlearn.callbacks": "estimators",
    "liftlearn.transforms": "data",
    "liftlearn.metrics": "metrics",
    "liftlearn.datasets": "datasets",
    "liftlearn.nn": "nn",
    "liftlearn.engine": "engine",
    "liftlearn.estimators": "estimators",
    "liftlearn.persistence": "persistence",
    "liftlearn.cli": "cli",
    # Old paths kept for one release (pickles name them).
    "liftlearn.adapters": "compat",
    "liftlearn.backbones": "compat",
    "liftlearn.features": "compat",
    "liftlearn.heads": "compat",
    "liftlearn.losses": "compat",
    "liftlearn.network": "compat",
    "liftlearn.semi_supervised": "compat",
    "liftlearn.training": "compat",
    "liftlearn.ulfine_math": "compat",
    "liftlearn.zero_shot": "compat",
    "liftlearn.datasets._benchmarks": "compat",
}

# Layer -> the layers it may import (besides itself).
MAY_IMPORT = {
    "base": set(),
    "data": {"base"},
    "metrics": {"base"},
    "datasets": {"base"},
    "nn": {"base"},
    "engine": {"base", "data", "nn", "metrics"},
    "estimators": {"base", "data", "nn", "engine", "metrics"},
    "persistence": {"base", "data", "nn", "engine", "estimators"},
    "cli": {"base", "data", "nn", "engine", "estimators", "persistence", "metrics", "datasets", "top"},
    "top": {"base", "estimators", "persistence"},
    "compat": {"base", "data", "nn", "engine", "estimators", "datasets", "persistence"},
}

# Layers that must never import scikit-learn (directly or through others).
NO_SKLEARN = ("liftlearn.nn", "liftlearn.engine", "liftlearn.data", "liftlearn.transforms",
              "liftlearn.image_sources")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> str:
    best = max((m for m in LAYER_OF if module == m or module.startswith(m + ".")), key=len)
    return LAYER_OF[best]


def _resolve(importer: str, is_package: bool, node) -> list:
    """liftlearn modules an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "liftlearn"]
    if node.level:
        base = importer.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "liftlearn":
        return []
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES else target)
    return out


def imports_of(module: str) -> set:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(_resolve(module, path.name == "__init__.py", node))
    found.discard(module)
    return {m for m in found if m in MODULES}


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    assert all(layer(m) in MAY_IMPORT for m in MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module):
    mine = layer(module)
    upward = sorted(
        f"{dep} ({layer(dep)})" for dep in GRAPH[module]
        if layer(dep) != mine and layer(dep) not in MAY_IMPORT[mine]
    )
    assert not upward, f"{module} ({mine}) imports upward or sideways: {upward}"


def test_no_import_cycles():
    # Iterative DFS with colours over the module graph.
    colour, cycles = {}, []

    def visit(start):
        stack = [(start, iter(sorted(GRAPH[start])))]
        path = [start]
        colour[start] = "grey"
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = "black"
                stack.pop()
                path.pop()
                continue
            if colour.get(child) == "grey":
                cycles.append(path[path.index(child):] + [child])
            elif child not in colour:
                colour[child] = "grey"
                stack.append((child, iter(sorted(GRAPH[child]))))
                path.append(child)

    for module in sorted(GRAPH):
        if module not in colour:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_rule_would_catch_an_upward_import():
    # The checker itself: an engine module importing an estimator is refused.
    node = ast.parse("from ..estimators import LiftPlusClassifier").body[0]
    (dep,) = _resolve("liftlearn.engine.loop", False, node)
    assert layer(dep) == "estimators" and "estimators" not in MAY_IMPORT["engine"]


@pytest.mark.parametrize("module", NO_SKLEARN)
def test_torch_layers_never_import_sklearn(module):
    code = f"import sys, {module}; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"importing {module} imports scikit-learn"


def test_import_liftlearn_is_light():
    code = "import sys, liftlearn; print(sorted(m for m in ('torch', 'sklearn', 'open_clip') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
