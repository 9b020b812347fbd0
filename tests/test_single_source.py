"""One source of truth: each of the duplicates the architecture review found is defined once in the tree.

These checks read the source (AST and text), so they also catch a copy that nothing imports yet.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("gcage_fast", "export", "kernels", "benchmarks")


def _sources() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))


def _trees() -> dict[str, ast.Module]:
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text(), str(p)) for p in _sources()}


TREES = _trees()


def _assignments(name: str) -> list[str]:
    """Module-level assignments to ``name`` (``NAME = ...`` or ``NAME: T = ...``), as file paths."""
    found = []
    for path, tree in TREES.items():
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found.append(path)
    return found


def _functions(name: str) -> list[str]:
    """Definitions of ``name`` or ``_name`` anywhere (module level or nested), as ``path:line``."""
    return [f"{path}:{node.lineno}" for path, tree in TREES.items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.lstrip("_") == name]


def _literal_tuples_of(values: set[str]) -> list[str]:
    """Places that spell out a tuple/list of precision names literally."""
    found = []
    for path, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List)) and len(node.elts) >= 2 and all(
                    isinstance(e, ast.Constant) and e.value in values for e in node.elts):
                found.append(f"{path}:{node.lineno}")
    return found


@pytest.mark.parametrize("name", ["PATCH"])
def test_constants_are_defined_once(name):
    assert len(_assignments(name)) == 1, _assignments(name)


def test_precision_names_are_spelled_out_once():
    places = _literal_tuples_of({"fp32", "fp16", "int8", "bf16"})
    assert all(p.startswith("gcage_fast/precision.py") for p in places), places


@pytest.mark.parametrize("name", ["private_dir", "refuse_external_data", "printable"])
def test_helpers_are_defined_once(name):
    assert len(_functions(name)) == 1, _functions(name)


def test_control_characters_are_escaped_in_one_place():
    places = [p for p in _sources() if "unicode_escape" in p.read_text()]
    assert [str(p.relative_to(ROOT)) for p in places] == ["gcage_fast/text.py"]


def test_one_production_fused_step():
    """Training and the scan build head inputs with the same function (no train/serve skew); the float64
    reference is the tests' oracle only."""
    users = {}
    for path, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("gcage_fast.kernels.reference",
                                                                    "gcage_fast.kernels.cpu"):
                for alias in node.names:
                    if alias.name.startswith("fuse_cam_from_patches"):
                        users.setdefault(f"{node.module}.{alias.name}", []).append(path)
    production = {k: v for k, v in users.items() if any(p.startswith(("gcage_fast/scoring", "gcage_fast/training"))
                                                          for p in v)}
    assert len(production) == 1, users
    (name, paths), = production.items()
    assert name.startswith("gcage_fast.kernels.cpu"), users
    assert any(p.startswith("gcage_fast/training") for p in paths) and any(
        p.startswith("gcage_fast/scoring") for p in paths), users


def test_no_scorer_is_chosen_by_isinstance():
    for path, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
                names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                assert not names & {"HostScorer", "DeviceScorer", "Detector", "DeviceDetector"}, path
