"""Out-of-memory and sticky device errors: halve the batch down to 1, then an error row for that input; a sticky
error stops the run (non-zero exit) and --resume finishes it in a fresh process."""

from __future__ import annotations

import numpy as np
import pytest
from genimages import save_image
from helpers import read_rows

from gcage_fast.config import ScanConfig
from gcage_fast.engine.base import infer_chunked, is_device_fault, is_out_of_memory
from gcage_fast.errors import DeviceFault, OutOfMemory
from gcage_fast.scan.local import scan
from gcage_fast.output.verify import verify_output as verify


class FakeOOM(RuntimeError):
    pass


class LimitedRunner:
    """Doubles its input; raises a CUDA-style out-of-memory error for batches larger than ``limit`` (a batch that
    contains the value ``poison`` fails at any size), and a sticky fault when asked to."""

    input_name = "x"
    output_names = ("y",)

    def __init__(self, limit: int, poison: float | None = None, fault: bool = False) -> None:
        self.limit, self.poison, self.fault = limit, poison, fault
        self.sizes: list[int] = []

    def infer(self, feed):
        x = feed["x"]
        self.sizes.append(len(x))
        if self.fault:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if len(x) > self.limit or (self.poison is not None and (x == self.poison).any()):
            raise FakeOOM("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"y": x * 2}


def test_out_of_memory_halves_the_batch_and_keeps_the_smaller_size(caplog):
    x = np.arange(20, dtype=np.float32).reshape(20, 1)
    runner = LimitedRunner(limit=5)
    out = infer_chunked(runner, x, 16)
    np.testing.assert_array_equal(out["y"], x * 2)
    assert runner.sizes == [16, 8, 4, 4, 4, 4, 4]  # 16 and 8 fail; 4 is kept for the rest
    assert "out of memory at batch size 16; retrying at 8" in caplog.text


def test_out_of_memory_at_batch_one_raises():
    runner = LimitedRunner(limit=8, poison=3.0)
    with pytest.raises(OutOfMemory, match="out of memory at batch size 1"):
        infer_chunked(runner, np.arange(6, dtype=np.float32).reshape(6, 1), 4)


def test_sticky_device_error_is_a_device_fault():
    with pytest.raises(DeviceFault, match="the device failed and cannot be used again in this process .*illegal "
                                          "memory access.*; run the same command with --resume"):
        infer_chunked(LimitedRunner(limit=8, fault=True), np.zeros((3, 1), np.float32), 4)


@pytest.mark.parametrize("text,oom,fault", [
    ("CUDA out of memory. Tried to allocate", True, False),
    ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer", True, False),
    ("CUDNN_STATUS_ALLOC_FAILED", True, False),
    ("CUDA error: an illegal memory access was encountered", False, True),
    ("CUDA error: unspecified launch failure", False, True),
    ("CUDA error: device-side assert triggered", False, True),
    ("shape mismatch", False, False),
])
def test_error_classification(text, oom, fault):
    assert is_out_of_memory(RuntimeError(text)) is oom
    assert is_device_fault(RuntimeError(text)) is fault


class _Wrapped:
    """A real runner whose infer() fails like a GPU would: OOM for batches containing a poisoned image, or a
    sticky fault on the n-th call."""

    def __init__(self, inner, poison_width: int | None = None, fault_on_call: int | None = None) -> None:
        self.inner, self.poison_width, self.fault_on_call = inner, poison_width, fault_on_call
        self.input_name, self.output_names = inner.input_name, inner.output_names
        self.calls = 0

    @property
    def info(self):
        return self.inner.info

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *exc):
        self.inner.__exit__(*exc)

    def infer(self, feed):
        self.calls += 1
        if self.fault_on_call is not None and self.calls >= self.fault_on_call:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        x = feed[self.input_name]
        # the poisoned image is uniformly this grey level (1/255 steps): any batch holding it "runs out of memory"
        if self.poison_width is not None and any(np.allclose(p, self.poison_width / 255.0) for p in x):
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return self.inner.infer(feed)


def _patch_runners(monkeypatch, **kw):
    from gcage_fast.engine import factory

    real = factory.create_runners

    def wrapped(*a, **k):
        pair = real(*a, **k)
        pair.base = _Wrapped(pair.base, **kw)
        return pair

    monkeypatch.setattr(factory, "create_runners", wrapped)


def test_image_that_never_fits_gets_an_error_row(tiny_model_dir, tmp_path, monkeypatch):
    from PIL import Image

    src = tmp_path / "in"
    for i in range(3):
        save_image(src / f"ok{i}.jpg", 300, 300, seed=i)
    Image.new("RGB", (260, 260), (77, 77, 77)).save(src / "huge.png")  # stands for an image too big for the GPU
    _patch_runners(monkeypatch, poison_width=77)
    scan(ScanConfig(inputs=(str(src),), output=str(tmp_path / "out"), model=str(tiny_model_dir), workers=0,
                    batch_size=8))
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in read_rows(tmp_path / "out")}
    assert len(rows) == 4
    assert rows["huge.png"]["status"] == "error" and rows["huge.png"]["error_code"] == "engine.out_of_memory"
    assert all(rows[f"ok{i}.jpg"]["status"] == "ok" for i in range(3))
    assert verify(tmp_path / "out").ok


def test_sticky_fault_stops_the_run_and_resume_finishes_it(tiny_model_dir, tmp_path, monkeypatch):
    src = tmp_path / "in"
    for i in range(6):
        save_image(src / f"im{i}.jpg", 300, 300, seed=i)
    cfg = ScanConfig(inputs=(str(src),), output=str(tmp_path / "out"), model=str(tiny_model_dir), workers=0,
                     batch_size=1, shard_size=2)
    _patch_runners(monkeypatch, fault_on_call=4)
    with pytest.raises(DeviceFault):
        scan(cfg)
    monkeypatch.undo()
    done = len(read_rows(tmp_path / "out")) if (tmp_path / "out" / "parts").is_dir() else 0
    assert done < 6
    import dataclasses

    summary = scan(dataclasses.replace(cfg, mode="resume"))
    assert summary.resumed
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    assert verify(tmp_path / "out").ok
