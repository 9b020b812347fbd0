"""Security refusals (RELIABILITY.md §4): external ONNX data, a shared export cache, links in the output tree,
raw control characters on the terminal, pickles without an explicit opt-in."""

import logging
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gcage_fast.cli.common import EscapingFormatter as _EscapingFormatter
from gcage_fast.engine.ort_runner import OrtRunner
from gcage_fast.errors import ExportError, ModelError
from gcage_fast.export.cache import cached_export
from gcage_fast.export.to_onnx import ExportOptions
from gcage_fast.models.registry import load_model
from gcage_fast.output.heatmaps import write_png_atomic


def _tiny_graph(path, external: bool):
    w = numpy_helper.from_array(np.ones((3,), np.float32), "w")
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="../../etc/hostname", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def test_external_tensor_data_is_refused(tmp_path):
    ok = _tiny_graph(tmp_path / "ok.onnx", external=False)
    with OrtRunner(ok, "x", ("y",)) as r:
        assert r.infer({"x": np.zeros(3, np.float32)})["y"].tolist() == [1.0, 1.0, 1.0]
    bad_dir = tmp_path / "m"
    bad_dir.mkdir()
    try:
        bad = _tiny_graph(bad_dir / "bad.onnx", external=True)
    except Exception:  # newer onnx refuses to write such a location: build the reference by hand
        model = onnx.load(str(ok))
        t = model.graph.initializer[0]
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value="../../etc/hostname")
        bad = bad_dir / "bad.onnx"
        onnx.save_model(model, str(bad))
    with pytest.raises(ModelError, match="references external tensor data"):
        OrtRunner(bad, "x", ("y",)).__enter__()


def test_shared_export_cache_is_refused(tmp_path, tiny_model_dir):
    model = load_model(tiny_model_dir)
    cache = tmp_path / "cache"
    (cache / "onnx").mkdir(parents=True)
    os.chmod(cache / "onnx", 0o777)
    with pytest.raises(ExportError, match="owned by another user or writable by others"):
        cached_export(model, ExportOptions.for_model(model), cache_root=cache)
    os.chmod(cache / "onnx", 0o700)
    entry = cached_export(model, ExportOptions.for_model(model), cache_root=cache)
    assert entry.is_dir()


def test_heatmaps_never_go_through_links(tmp_path):
    from PIL import Image

    (tmp_path / "elsewhere").mkdir()
    heat = tmp_path / "out" / "heatmaps"
    heat.mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere", heat / "ab")
    with pytest.raises(OSError, match="symbolic link"):
        write_png_atomic(Image.new("RGB", (4, 4)), heat / "ab" / "abcd.png", tag="t")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_log_messages_are_escaped():
    record = logging.LogRecord("gcage_fast", logging.WARNING, __file__, 1, "skipping %s", ("\x1b]0;pwned\x07x.jpg",),
                               None)
    text = _EscapingFormatter("%(message)s").format(record)
    assert text == "skipping \\x1b]0;pwned\\x07x.jpg"


def test_torchscript_needs_an_explicit_opt_in(tmp_path):
    from gcage_fast.models.importers import import_susy

    (tmp_path / "SuSy.pt").write_bytes(b"not even read")
    with pytest.raises(ModelError, match="pass --trust-torchscript"):
        import_susy(tmp_path / "SuSy.pt", tmp_path / "out")
