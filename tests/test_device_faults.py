"""Out-of-memory and sticky device errors: halve the batch down to 1, then an error row for that input; a sticky
error stops the run (non-zero exit) and --resume finishes it in a fresh process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from genimages import save_image
from helpers import read_rows

from gcage_fast.config import ScanConfig
from gcage_fast.engine.base import infer_chunked, is_device_fault, is_out_of_memory
from gcage_fast.errors import DeviceFault, OutOfMemory
from gcage_fast.scanning.local import scan
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
    done = len(read_rows(tmp_path / "out")) if (tmp_path / "out" / "results").is_dir() else 0
    assert done < 6
    import dataclasses

    summary = scan(dataclasses.replace(cfg, mode="resume"))
    assert summary.resumed
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    assert verify(tmp_path / "out").ok


# --- the device path: every step of DeviceScorer.run, not only the engine calls ---------------------------------

_POISON = 77  # the always-failing image is uniformly this grey level; decoded JPEGs of the others never are


def _cuda_oom():
    import torch

    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 139.8 GiB total)")


class _Injector:
    """Makes one step of the device path fail like a GPU would. ``pack_images`` is wrapped to note which images
    the batch in progress holds (DeviceScorer.run is called on the main thread, one batch at a time); the chosen
    step then raises for a batch of more than one image (``when="batch"``) or for any batch that holds the
    poisoned image (``when="poison"``). ``error`` builds the exception (a CUDA out-of-memory error by default)."""

    def __init__(self, when: str, error=_cuda_oom) -> None:
        self.when, self.error = when, error
        self.n_images, self.poisoned = 0, False
        self.raised = 0

    def fire(self) -> None:
        if (self.when == "batch" and self.n_images > 1) or (self.when == "poison" and self.poisoned):
            self.raised += 1
            raise self.error()

    def failing(self, fn):
        def wrapped(*a, **k):
            self.fire()
            return fn(*a, **k)

        return wrapped

    def failing_on_copy(self, fn, pick):
        """``fn``'s output ``pick`` comes back as a tensor whose copy to the host (``.cpu()``) fails."""
        import torch

        injector = self

        class FailsOnCopy(torch.Tensor):
            def cpu(self, *a, **k):
                injector.fire()
                return torch.Tensor.cpu(self.as_subclass(torch.Tensor), *a, **k)

        def wrapped(*a, **k):
            out = fn(*a, **k)
            if isinstance(out, tuple):
                return tuple(o.as_subclass(FailsOnCopy) if i == pick else o for i, o in enumerate(out))
            return out.as_subclass(FailsOnCopy)

        return wrapped

    def install(self, monkeypatch, step: str) -> None:
        from gcage_fast.kernels import torch_ref
        from gcage_fast.scoring import device

        real_pack = device.pack_images

        def pack(images, *a, **k):
            self.n_images = len(images)
            self.poisoned = any((img == _POISON).all() for img in images)
            if step == "pack_images":
                self.fire()
            return real_pack(images, *a, **k)

        monkeypatch.setattr(device, "pack_images", pack)
        if step in ("grid_boxes", "patch_table", "topk_per_image", "selected_boxes"):
            monkeypatch.setattr(device, step, self.failing(getattr(device, step)))
        elif step in ("patch_contrast", "gather_patches", "fuse_cam"):  # the KernelSet's functions
            monkeypatch.setattr(torch_ref, step, self.failing(getattr(torch_ref, step)))
        elif step == "copy back (cams)":
            monkeypatch.setattr(torch_ref, "fuse_cam", self.failing_on_copy(torch_ref.fuse_cam, pick=1))
        elif step == "copy back (selection)":
            monkeypatch.setattr(torch_ref, "patch_contrast", self.failing_on_copy(torch_ref.patch_contrast, pick=0))
        else:
            assert step == "pack_images", step


DEVICE_STEPS = ["pack_images", "grid_boxes", "patch_table", "patch_contrast", "topk_per_image", "selected_boxes",
                "gather_patches", "fuse_cam", "copy back (cams)", "copy back (selection)"]


@pytest.fixture(scope="module")
def device_inputs(tmp_path_factory):
    from PIL import Image

    src = tmp_path_factory.mktemp("dev-faults-in")
    for i in range(3):
        save_image(src / f"ok{i}.jpg", 300 + 60 * i, 300, seed=i)
    Image.new("RGB", (260, 260), (_POISON,) * 3).save(src / "huge.png")  # stands for an image too big for the GPU
    return src


def _device_scan(src, out, model):
    # batch_size 8 > the 4 images' patches: every image goes to the device in one batch
    scan(ScanConfig(inputs=(str(src),), output=str(out), model=str(model), workers=0, batch_size=8,
                    kernel_impl="reference"))
    return {r["path"].rsplit("/", 1)[-1]: r for r in read_rows(out)}


@pytest.fixture(scope="module")
def uninjected(device_inputs, tiny_model_dir, tmp_path_factory):
    rows = _device_scan(device_inputs, tmp_path_factory.mktemp("dev-faults") / "out", tiny_model_dir)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows.values())
    return rows


def _assert_same_rows(ref, got, names):
    import golden_rows

    for name in names:
        diffs = golden_rows.compare(golden_rows.normalise([ref[name]], Path("/")),
                                    golden_rows.normalise([got[name]], Path("/")), name)
        assert not diffs, "\n".join(diffs[:20])


@pytest.mark.parametrize("step", DEVICE_STEPS)
def test_oom_in_a_device_step_halves_then_gives_an_error_row(step, device_inputs, uninjected, tiny_model_dir,
                                                             tmp_path, monkeypatch, caplog):
    injector = _Injector("poison")
    injector.install(monkeypatch, step)
    rows = _device_scan(device_inputs, tmp_path / "out", tiny_model_dir)
    assert injector.raised == 2  # the batch of four, then the poisoned image alone
    assert "scoring them one by one" in caplog.text
    assert rows["huge.png"]["status"] == "error" and rows["huge.png"]["error_code"] == "engine.out_of_memory"
    ok = [f"ok{i}.jpg" for i in range(3)]
    assert all(rows[n]["status"] == "ok" for n in ok)
    _assert_same_rows(uninjected, rows, ok)
    assert verify(tmp_path / "out").ok


@pytest.mark.parametrize("step", DEVICE_STEPS)
def test_oom_in_a_device_step_for_a_batch_leaves_every_row_ok(step, device_inputs, uninjected, tiny_model_dir,
                                                              tmp_path, monkeypatch):
    injector = _Injector("batch")
    injector.install(monkeypatch, step)
    rows = _device_scan(device_inputs, tmp_path / "out", tiny_model_dir)
    assert injector.raised == 1  # only the batch of four; each image fits alone
    assert all(r["status"] == "ok" for r in rows.values())
    _assert_same_rows(uninjected, rows, sorted(uninjected))
    assert verify(tmp_path / "out").ok


@pytest.mark.parametrize("step", ["pack_images", "patch_contrast", "fuse_cam", "copy back (cams)"])
def test_sticky_fault_in_a_device_step_is_a_device_fault(step, device_inputs, uninjected, tiny_model_dir, tmp_path,
                                                         monkeypatch):
    injector = _Injector("batch", error=lambda: RuntimeError("CUDA error: an illegal memory access was encountered"))
    injector.install(monkeypatch, step)
    with pytest.raises(DeviceFault, match="cannot be used again in this process .*illegal memory access.*--resume"):
        _device_scan(device_inputs, tmp_path / "out", tiny_model_dir)
    monkeypatch.undo()
    import dataclasses

    cfg = ScanConfig(inputs=(str(device_inputs),), output=str(tmp_path / "out"), model=str(tiny_model_dir),
                     workers=0, batch_size=8, kernel_impl="reference")
    assert scan(dataclasses.replace(cfg, mode="resume")).resumed
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in read_rows(tmp_path / "out")}
    _assert_same_rows(uninjected, rows, sorted(uninjected))
    assert verify(tmp_path / "out").ok


def test_device_errors_classifies_and_lets_other_errors_through():
    from gcage_fast.engine.base import DeviceErrors

    with pytest.raises(OutOfMemory, match=r"out of memory in fuse_cam \(CUDA out of memory"):
        with DeviceErrors("fuse_cam"):
            raise _cuda_oom()
    with pytest.raises(OutOfMemory, match="in pack_images"):
        with DeviceErrors("pack_images"):
            raise MemoryError()  # the pinned host staging buffer
    with pytest.raises(DeviceFault, match="unspecified launch failure"):
        with DeviceErrors("patch_contrast"):
            raise RuntimeError("CUDA error: unspecified launch failure")
    inner = OutOfMemory("out of memory at batch size 1 (x)")
    with pytest.raises(OutOfMemory) as caught:
        with DeviceErrors("base engine"):
            raise inner
    assert caught.value is inner  # already classified by run_chunked: unchanged
    with pytest.raises(ValueError, match="must be uint8"):
        with DeviceErrors("pack_images"):
            raise ValueError("image 0 must be uint8 H×W×3")
