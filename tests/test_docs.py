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
