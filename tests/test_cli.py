"""A9: every command teaches by example; bad usage exits 1 (2 for usage) with one `Error: ...` line, no traceback."""

import ast
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import genimages as gen
import gcage_fast.cli
from gcage_fast.cli import cli
from helpers import run_cli

COMMANDS = ["scan", "verify", "export", "import-susy", "models", "init-model", "info"]


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def test_every_help_has_an_example():
    top = invoke("--help")
    assert top.exit_code == 0 and "Example:" in top.output
    for name in COMMANDS:
        assert name in top.output
        res = invoke(name, "--help")
        assert res.exit_code == 0, name
        assert "Example:" in res.output and f"gcage-fast {name}" in res.output, name


def test_version():
    res = invoke("--version")
    assert res.exit_code == 0 and res.output.startswith("gcage-fast, version ")


@pytest.fixture
def images(tmp_path):
    gen.save_image(tmp_path / "in" / "a.jpg", 300, 300, 1)
    return tmp_path / "in"


def _one_error_line(res, expected_start):
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert "Traceback" not in res.output
    assert lines[-1].startswith(expected_start), res.output
    assert sum(ln.startswith("Error:") for ln in lines) == 1


def test_missing_input(tiny_model_dir, tmp_path):
    res = invoke("scan", tmp_path / "nope", "-o", tmp_path / "out", "--model", tiny_model_dir)
    assert res.exit_code == 1
    _one_error_line(res, f"Error: input not found: {tmp_path / 'nope'} (No such file or directory)")
    assert not (tmp_path / "out").exists()


def test_unknown_model(images, tmp_path):
    res = invoke("scan", images, "-o", tmp_path / "out", "--model", "no-such-model", env={"GCAGE_MODEL_PATH": ""})
    assert res.exit_code == 1
    _one_error_line(res, "Error: unknown model 'no-such-model' (known: ")
    assert not (tmp_path / "out").exists()


def test_default_model_missing_is_explained(images, tmp_path, monkeypatch):
    from gcage_fast.models import registry

    monkeypatch.setattr(registry, "DEFAULT_MODEL", "not-installed")
    res = invoke("scan", images, "-o", tmp_path / "out")
    assert res.exit_code == 1
    _one_error_line(res, "Error: the default model 'not-installed' is not installed; pass --model NAME")


def test_unwritable_output(images, tiny_model_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = invoke("scan", images, "-o", blocker / "out", "--model", tiny_model_dir)
    assert res.exit_code == 1
    _one_error_line(res, f"Error: cannot create output directory {blocker / 'out'}: Not a directory")


def test_no_inputs_and_bad_target(images, tiny_model_dir, tmp_path):
    res = invoke("scan", "-o", tmp_path / "out", "--model", tiny_model_dir)
    assert res.exit_code == 2  # a usage mistake (tests/test_cli_errors.py has the whole message)
    _one_error_line(res, "Error: no inputs: name files, directories or archives to scan (INPUTS), or give ")
    res = invoke("scan", images, "-o", tmp_path / "out", "--model", tiny_model_dir, "--cam-target", "class:zebra")
    assert res.exit_code == 1
    _one_error_line(res, "Error: unknown class 'zebra' in CAM target 'class:zebra'; classes: authentic, synthetic")


def test_usage_errors_exit_2(tmp_path):
    res = invoke("scan", tmp_path)
    assert res.exit_code == 2 and "Error: Missing option '-o' / '--output'." in res.output
    res = invoke("scan", tmp_path, "-o", tmp_path / "o", "--backend", "tensorflow")
    assert res.exit_code == 2 and "Error: Invalid value for '--backend'" in res.output
    res = invoke("scan", tmp_path, "-o", tmp_path / "o", "--resume", "--top-k", "0")
    assert res.exit_code == 2


def test_verify_on_a_non_output(tmp_path):
    res = invoke("verify", tmp_path)
    assert res.exit_code == 1
    _one_error_line(res, f"Error: {tmp_path} is not a gcage_fast output directory (no run.json)")


def test_console_script_exit_codes(images, tmp_path):
    """The same through a real process: exit status and stderr as a shell sees them."""
    res = run_cli("scan", images, "-o", tmp_path / "out", "--model", tmp_path / "missing-model", check=False)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: unknown model '{tmp_path / 'missing-model'}' (known: ")
    assert lines[0].endswith("pass a name or a model directory")


def test_models_registry_by_name(tiny_model_dir, images, tmp_path):
    env = {"GCAGE_MODEL_PATH": str(tiny_model_dir.parent)}
    res = invoke("models", "--json", env=env)
    assert res.exit_code == 0
    names = {m["name"]: m for m in json.loads(res.output)}
    assert names["tiny"]["model_id"] == "tiny@0" and names["tiny"]["head"] is True
    assert "UNTRAINED" in names["tiny"]["description"]
    text = invoke("models", env=env)
    assert "tiny: tiny@0, 2 classes, G-CAGE head" in text.output
    res = invoke("scan", images, "-o", tmp_path / "out", "--model", "tiny", "--workers", "0", "--json", env=env)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{"):])["model_id"] == "tiny@0"


def test_info_json():
    res = invoke("info", "--json")
    assert res.exit_code == 0
    data = json.loads(res.output)
    assert data["backends"][0] == "ort" and "CPUExecutionProvider" in data["onnxruntime_providers"]
    assert data["cpu"]["cores"] == os.cpu_count()
    text = invoke("info")
    assert "Backends: ort, torch" in text.output


def test_init_model(tmp_path):
    res = invoke("init-model", "-o", tmp_path / "m", "--width", "8", "--seed", "4", "--classes", "real,gan,diffusion")
    assert res.exit_code == 0
    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    assert spec["class_names"] == ["real", "gan", "diffusion"] and spec["base"]["width"] == 8
    bad = invoke("init-model", "-o", tmp_path / "n", "--width", "10")
    assert bad.exit_code == 2 and "must be a multiple of 4" in bad.output


# --------------------------------------------------------------------------------------------------- the package
CLI_DIR = Path(gcage_fast.cli.__file__).parent


def _cli_imports(path):
    """The modules of gcage_fast.cli (the package included) that the file at ``path`` imports."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:  # relative: from . import x, from .common import y
            names.append(".".join(filter(None, ["gcage_fast.cli", node.module])))
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module)
            if node.module == "gcage_fast":
                names += [f"gcage_fast.{a.name}" for a in node.names]
    return {n for n in names if n == "gcage_fast.cli" or n.startswith("gcage_fast.cli.")}


def test_command_modules_import_only_common():
    """No import cycle: only __init__ imports the command modules; they import gcage_fast.cli.common (and the
    progress display, which imports only common) and never the package, and common imports nothing of
    gcage_fast.cli."""
    modules = sorted(p for p in CLI_DIR.glob("*.py") if p.name != "__init__.py")
    assert {p.stem for p in modules} >= {"common", "scan", "engines", "progress"}
    for path in modules:
        allowed = (set() if path.stem == "common" else {"gcage_fast.cli.common"} if path.stem == "progress"
                   else {"gcage_fast.cli.common", "gcage_fast.cli.progress"})
        assert _cli_imports(path) <= allowed, (path.name, _cli_imports(path) - allowed)


def test_every_command_maps_library_errors():
    from gcage_fast.cli.common import Command

    assert all(isinstance(c, Command) for c in cli.commands.values())


def test_scan_options_fill_scan_config(monkeypatch, tmp_path):
    """scan's defaults are ScanConfig's and Limits', and each option reaches its field."""
    from gcage_fast.config import Limits, ScanConfig
    from gcage_fast.scanning import local

    seen = []

    def fake_scan(config, progress):
        seen.append(config)
        return SimpleNamespace(to_dict=lambda: {"ok": True})

    monkeypatch.setattr(local, "scan", fake_scan)
    out = str(tmp_path / "o")
    assert invoke("scan", "a", "b", "-o", out, "--json").exit_code == 0
    assert seen[-1] == ScanConfig(inputs=("a", "b"), output=out)
    res = invoke("scan", "a", "-o", out, "--resume", "--timeout", "5", "--worker-memory", "512",
                 "--archive-max-members", "7", "--archive-max-bytes", "8", "--archive-max-ratio", "9",
                 "--max-pixels", "10", "--max-bytes", "11", "--threads", "2", "--precision", "int8", "-q")
    assert res.exit_code == 0, res.output
    assert seen[-1].mode == "resume" and seen[-1].threads == 2 and seen[-1].precision == "int8"
    assert seen[-1].limits == Limits(timeout_s=5.0, worker_memory_mb=512, max_members=7, max_archive_bytes=8,
                                     max_ratio=9.0, max_pixels=10, max_bytes=11)


def test_an_unmapped_option_fails_loudly():
    from gcage_fast.cli.common import from_options
    from gcage_fast.config import Limits

    assert from_options(Limits, {"timeout": 3.0}, {"timeout": "timeout_s"}).timeout_s == 3.0
    with pytest.raises(TypeError, match=r"options \['new_option'\] fill no field of Limits"):
        from_options(Limits, {"max_bytes": 1, "new_option": 2})
