"""The README documents every command, CAM method, error code and output column that the code has."""

import re
from pathlib import Path

from gcage_fast.cli import cli
from gcage_fast.config import CAM_METHODS
from gcage_fast.output.schema import ROW_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_command_is_documented():
    for name in cli.commands:
        assert f"gcage-fast {name}" in README, name


def test_every_cam_method_is_documented():
    for method in CAM_METHODS:
        assert f"`{method}`" in README, method


def test_every_error_code_is_documented():
    codes = set()
    for path in list((ROOT / "gcage_fast").rglob("*.py")):
        codes |= set(re.findall(r'"((?:decode|limit|fs|worker|archive|model|engine)\.[a-z_]+)"', path.read_text()))
    assert len(codes) >= 15
    missing = sorted(c for c in codes if f"`{c}`" not in README)
    assert not missing, missing


def test_every_column_is_documented():
    missing = [f.name for f in ROW_SCHEMA if f"`{f.name}`" not in README]
    assert not missing, missing


_DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_PATH_RE = re.compile(r"(?<![\w/.])((?:gcage_fast|export|kernels|benchmarks|tests)/[\w/]*\w\.(?:py|cu))\b")
_DOTTED_RE = re.compile(r"(?<![\w.])(gcage_fast(?:\.\w+)+)")


def _help_texts() -> str:
    """Every command's --help, as a user sees it."""
    from click.testing import CliRunner

    runner = CliRunner()
    texts = [runner.invoke(cli, ["--help"]).output]
    texts += [runner.invoke(cli, [name, "--help"]).output for name in cli.commands]
    return "\n".join(texts)


def _resolves(dotted: str) -> bool:
    """``gcage_fast.a.b.c``: a module, or a module's attribute (a class, a function, a method of a class)."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_every_module_path_in_the_docs_and_help_exists():
    """README, docs/*.md and every --help name modules that exist (the layout they describe is the code's)."""
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in _DOCS}
    texts["--help"] = _help_texts()
    missing = sorted({f"{where}: {m}" for where, text in texts.items() for m in _PATH_RE.findall(text)
                      if not (ROOT / m).exists()})
    assert not missing, missing


def test_every_dotted_name_in_the_docs_and_help_resolves():
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in _DOCS}
    texts["--help"] = _help_texts()
    missing = sorted({f"{where}: {m}" for where, text in texts.items() for m in _DOTTED_RE.findall(text)
                      if not _resolves(m.rstrip("."))})
    assert not missing, missing


def test_the_readme_python_examples_name_the_public_api():
    """Every ```python block of the README compiles, and what it imports from gcage_fast exists."""
    import ast

    import gcage_fast

    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "gcage_fast":
                for alias in node.names:
                    assert alias.name in gcage_fast.__all__ and getattr(gcage_fast, alias.name), alias.name


def test_setup_numbers_come_from_the_setup_script_and_are_current():
    import json
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from setup_cost import inputs_digest

    measured = json.loads((ROOT / "benchmarks" / "results" / "setup-cost.json").read_text())
    assert f"**{measured['install_s']} s** to install, **{measured['venv_gb']} GB** in `.venv`" in README
    assert measured["inputs"] == inputs_digest(), \
        "pyproject.toml or constraints.txt changed: rerun benchmarks/setup_cost.py and update the README"
