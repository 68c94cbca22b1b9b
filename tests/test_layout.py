"""The architecture's rules, checked on the source (every import, lazy ones included).

Layers, bottom up: leaf math and I/O helpers; models; colorizing (the
pipeline and what it uses); training and evaluation; the apps (CLI, web
demo, demo). Each layer imports only from the layers below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "autocolor"

LEAVES = {"color", "levin", "atomic", "errors", "settings"}  # import nothing of the package
TRAINING = {"train", "data", "photos", "validation", "adversarial", "evaluate", "evaluate_hints",
            "evaluate_photos", "tune"}
APPS = {"cli", "web", "webedit", "webguard", "demo", "__main__"}
COLORIZING = {"pipeline", "inference", "guide", "faces", "imageio", "video", "onnx_export", "ort_runner", "checkpoint",
              "quantize", "metrics"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__") or "autocolor"


def _imports() -> dict[str, set[str]]:
    """Each module's imports of the package (``autocolor.x.y`` written ``x.y``)."""
    table = {}
    for path in SRC.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            found = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [node.module]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            names |= {n.removeprefix("autocolor.") if n != "autocolor" else "autocolor"
                      for n in found if n == "autocolor" or n.startswith("autocolor.")}
        table[_module_name(path)] = names
    return table


IMPORTS = _imports()


def _reachable(module: str) -> set[str]:
    """Everything ``module`` imports, directly or through others (the package
    root, which re-exports the API, is not followed)."""
    seen, todo = set(), [module]
    while todo:
        for name in IMPORTS.get(todo.pop(), ()):
            if name not in seen and name != "autocolor":
                seen.add(name)
                todo.append(name)
    return seen


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_rules_see_every_module():
    assert {"pipeline", "inference", "models.chroma_unet", "train", "cli"} <= set(IMPORTS)
    assert "models.base" in IMPORTS["models.chroma_unet"]  # the parser reads both import forms


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaf_modules_import_nothing_of_the_package(leaf):
    assert IMPORTS[leaf] == set(), f"{leaf} imports {IMPORTS[leaf]}"


@pytest.mark.parametrize("module", sorted(m for m in IMPORTS if m.startswith("models")))
def test_models_never_reach_data_training_or_apps(module):
    bad = {n for n in _reachable(module) if _top(n) in TRAINING | APPS}
    assert not bad, f"{module} reaches {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(COLORIZING))
def test_colorizing_never_reaches_training_or_apps(module):
    bad = {n for n in _reachable(module) if _top(n) in TRAINING | APPS}
    assert not bad, f"{module} reaches {sorted(bad)}"


def test_only_the_apps_know_the_apps():
    for module, names in IMPORTS.items():
        if _top(module) in APPS:
            continue
        bad = {n for n in names if _top(n) in APPS}
        assert not bad, f"{module} imports {sorted(bad)}"
