"""`gcage-fast build-engine` (gcage_fast.cli.engines), run through click's CliRunner on the command object."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fake_tensorrt import FakeTensorRT
from gcage_fast.cli.engines import build_engine
from gcage_fast.export import engine_cache
from gcage_fast.export.engine_cache import GpuIdentity


def test_help_documents_the_flags():
    result = CliRunner().invoke(build_engine, ["--help"])
    assert result.exit_code == 0
    for flag in ("--model", "--precision", "fp32|fp16|int8", "--min-batch", "--opt-batch", "--max-batch",
                 "--workspace", "MiB", "--timing-cache", "--graph", "base|head|both", "-o, --output", "--json",
                 "Example:", "gcage-fast build-engine --precision fp16", "pypi.nvidia.com"):
        assert flag in result.output, flag


def test_without_tensorrt_exit_1_with_install_message_before_any_export(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    import gcage_fast.export.cache as export_cache

    monkeypatch.setattr(export_cache, "cached_export", lambda *a, **k: pytest.fail("exported without TensorRT"))
    result = CliRunner().invoke(build_engine, ["--precision", "fp16"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: TensorRT is not installed")
    assert "pip install --extra-index-url https://pypi.nvidia.com tensorrt" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_without_tensorrt_in_a_real_process_no_traceback():
    code = "import sys; from gcage_fast.cli.engines import build_engine; build_engine(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, "--graph", "base"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("Error: TensorRT is not installed") and "Traceback" not in proc.stderr


def test_bad_batch_order_is_a_one_line_error():
    result = CliRunner().invoke(build_engine, ["--min-batch", "8", "--opt-batch", "4"])
    assert result.exit_code == 1 and "Error: batch sizes must satisfy" in result.output


@pytest.mark.slow
def test_builds_both_graphs_of_a_model_with_fake_tensorrt(tmp_path, monkeypatch, tiny_model_dir):
    trt = FakeTensorRT("11.4.0.106")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    # the GPU the engine is built for (torch.cuda itself stays as it is: the ONNX export runs on the CPU)
    monkeypatch.setattr(engine_cache, "current_gpu", lambda device=None: GpuIdentity("Fake H200", "9.0"))
    args = ["--model", str(tiny_model_dir), "-o", str(tmp_path / "engines"), "--opt-batch", "16",
            "--workspace", "512", "--timing-cache", str(tmp_path / "tc"), "--json"]
    result = CliRunner().invoke(build_engine, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["graph"] for r in rows] == ["base", "head"] and all(r["built"] for r in rows)
    assert sorted(p.name for p in (tmp_path / "engines").iterdir()) == [
        "tiny-base-fp32.engine", "tiny-base-fp32.engine.json", "tiny-head-fp32.engine", "tiny-head-fp32.engine.json"]
    shapes = [c[1:] for c in trt.find("set_shape")]
    assert shapes == [("patches", (1, 3, 224, 224), (16, 3, 224, 224), (256, 3, 224, 224)),
                      ("head_input", (1, 4, 224, 224), (16, 4, 224, 224), (256, 4, 224, 224))]
    assert trt.find("set_memory_pool_limit")[0] == ("set_memory_pool_limit", "WORKSPACE", 512 << 20)
    again = CliRunner().invoke(build_engine, args[:-1])
    assert again.exit_code == 0 and again.output.count("Reused (verified)") == 2
    # fp16 on TensorRT 11 needs the fp16 graph of the export step; an fp32 graph is refused, not mislabelled
    from gcage_fast.export.to_onnx import ExportOptions

    if "precision" not in ExportOptions.__dataclass_fields__:
        fp16 = CliRunner().invoke(build_engine, args[:-1] + ["--precision", "fp16"])
        assert fp16.exit_code == 1 and "TensorRT 11 takes the precision from the graph" in fp16.output
