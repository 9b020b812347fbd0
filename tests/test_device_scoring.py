"""DeviceScorer against HostScorer (fed by gcage_fast.ingest.prepare's patch selection), the device top-k, and the
kernel dispatcher's choices and errors."""

import logging
import sys

import numpy as np
import pytest
import torch

from gcage_fast.scoring.host import HostScorer
from gcage_fast.scoring.device import DeviceScorer
from gcage_fast.engine.torch_runner import TorchRunner
from gcage_fast.errors import ConfigError, EngineError, MissingDependencyError
from gcage_fast.export.graphs import BASE_INPUT, HEAD_INPUT, HEAD_OUTPUTS, base_graph, base_output_names, head_graph
from gcage_fast.kernels import dispatch
from gcage_fast.kernels.batching import topk_per_image
from gcage_fast.models.registry import load_model
from gcage_fast.scoring.patches import PATCH, select
from gcage_fast.ingest.prepare import Prepared

TRITON_MODULE = "gcage_fast.kernels.triton_kernels"


def _images(seed, shapes):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes]
    images[0][:, :PATCH] = 128  # a flat patch column: equal contrasts, ties broken by the lower k
    return images


def _prepared(images, top_k):
    out = []
    for n, rgb in enumerate(images):
        sel = select(rgb, top_k)
        patches = np.stack([rgb[y:y + PATCH, x:x + PATCH] for x, y in sel.boxes])
        out.append(Prepared(index=n, patches=patches, boxes=sel.boxes, contrast=sel.contrast,
                            n_patches_total=sel.n_total))
    return out


@pytest.fixture(scope="module")
def tiny_runners(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    cam = model.spec.cam
    base = TorchRunner(base_graph(model, cam.method, cam.target, cam.layer), BASE_INPUT, base_output_names(False))
    head = TorchRunner(head_graph(model), HEAD_INPUT, HEAD_OUTPUTS)
    with base, head:
        yield model.spec, base, head


def _assert_same(dev_results, ref_scores, prepared, tol):
    assert len(dev_results) == len(ref_scores)
    for res, ref, prep in zip(dev_results, ref_scores, prepared):
        np.testing.assert_array_equal(res.selection.boxes, prep.boxes)
        np.testing.assert_allclose(res.selection.contrast, prep.contrast, rtol=0, atol=0)
        assert res.selection.n_total == prep.n_patches_total
        s = res.score
        assert s.verdict == ref.verdict and s.attribution == ref.attribution
        assert abs(s.p_fake - ref.p_fake) <= tol and abs(s.base_p_fake - ref.base_p_fake) <= tol
        np.testing.assert_allclose(s.patch_p_fake, ref.patch_p_fake, rtol=0, atol=tol)
        np.testing.assert_allclose(s.patch_probs, ref.patch_probs, rtol=0, atol=tol)
        np.testing.assert_allclose(s.base_probs, ref.base_probs, rtol=0, atol=tol)
        assert np.abs(s.patch_cams.astype(int) - ref.patch_cams.astype(int)).max() <= 1
        assert s.patch_probs.dtype == ref.patch_probs.dtype and s.patch_cams.dtype == ref.patch_cams.dtype


@pytest.mark.parametrize("keep_heat", [False, True])
def test_reference_matches_detector(tiny_runners, keep_heat):
    spec, base, head = tiny_runners
    images = _images(0, [(224, 672), (500, 300), (460, 700)])
    top_k = 3
    prepared = _prepared(images, top_k)
    ref = HostScorer(spec, base, head, 0.5, batch_size=4, keep_heat=keep_heat).score(prepared)
    dev = DeviceScorer(spec, base, head, 0.5, batch_size=4, keep_heat=keep_heat, kernel_impl="reference",
                         top_k=top_k)
    assert dev.kernel_impl == "reference"
    results = dev.run(images)
    _assert_same(results, ref, prepared, 1e-5)
    if keep_heat:
        for res, r in zip(results, ref):
            np.testing.assert_allclose(res.score.heat, r.heat, rtol=0, atol=1e-5)
    full = [Prepared(index=i, image=img, top_k=top_k) for i, img in enumerate(images)]
    assert [s.p_fake for s in dev.score(full)] == [r.score.p_fake for r in results]
    assert [p.boxes.tolist() for p in full] == [r.selection.boxes.tolist() for r in results]
    assert dev.score([]) == []


def test_base_only_model_and_torch_runner(tiny_runners):
    """Head None: p_fake from the base detector. A runner with accepts_torch gets device tensors."""
    spec, base, _ = tiny_runners

    class TorchIn:
        accepts_torch = True
        input_name = base.input_name
        output_names = base.output_names
        info = base.info
        seen = []

        def infer_torch(self, feed):
            x = feed[self.input_name]
            self.seen.append(type(x))
            out = base.infer({self.input_name: x.numpy()})
            return {k: torch.from_numpy(v) for k, v in out.items()}

    images = _images(1, [(300, 300), (224, 449)])
    prepared = _prepared(images, 2)
    ref = HostScorer(spec, base, None, 0.5).score(prepared)
    runner = TorchIn()
    dev = DeviceScorer(spec, runner, None, 0.5, kernel_impl="reference", top_k=2)
    _assert_same(dev.run(images), ref, prepared, 1e-5)
    assert runner.seen and all(t is torch.Tensor for t in runner.seen)


def test_triton_interpreter_matches_detector(tiny_runners, triton_interpreted):
    spec, base, head = tiny_runners
    images = _images(2, [(224, 448), (230, 224)])
    prepared = _prepared(images, 2)
    ref = HostScorer(spec, base, head, 0.5).score(prepared)
    dev = DeviceScorer(spec, base, head, 0.5, kernel_impl="triton", top_k=2)
    assert dev.kernel_impl == "triton" and "interpreter" in dev.kernel_detail
    _assert_same(dev.run(images), ref, prepared, 1e-4)


def test_device_topk_order_and_ties():
    sums = torch.tensor([5, 9, 5, 9, 1, 7, 7, 0, 3], dtype=torch.int64)
    ks, keep = topk_per_image(sums, [5, 1, 3], top_k=3)
    assert keep == [3, 1, 3]
    assert ks.tolist() == [1, 3, 0, 0, 0, 2, 1]


def test_small_image_is_refused(tiny_runners):
    spec, base, head = tiny_runners
    dev = DeviceScorer(spec, base, head, 0.5, kernel_impl="reference")
    with pytest.raises(ValueError, match="smaller than one"):
        dev.run([np.zeros((200, 300, 3), np.uint8)])


# --- dispatcher -------------------------------------------------------------------------------------------------

def test_auto_on_cpu_is_reference(monkeypatch, caplog):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    with caplog.at_level(logging.INFO, logger="gcage_fast"):
        ks = dispatch.resolve_kernels(None, "cpu")
    assert ks.name == "reference"
    assert "auto on cpu tensors -> reference" in caplog.text


def test_env_var_and_argument(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert dispatch.requested_impl() == "reference"
    assert dispatch.requested_impl("cuda") == "cuda"  # the argument wins
    monkeypatch.setenv(dispatch.ENV_VAR, "fast")
    with pytest.raises(ConfigError, match="GCAGE_KERNEL_IMPL"):
        dispatch.resolve_kernels(None, "cpu")
    with pytest.raises(ConfigError, match="choose one of auto, reference, triton, cuda"):
        dispatch.resolve_kernels("opencl", "cpu")


def test_cuda_on_cpu_fails_loudly():
    with pytest.raises(EngineError, match="CUDA tensors"):
        dispatch.resolve_kernels("cuda", "cpu")


def test_triton_on_cpu_without_interpreter_fails_loudly(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delitem(sys.modules, TRITON_MODULE, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(EngineError, match="TRITON_INTERPRET=1"):
        dispatch.resolve_kernels("triton", "cpu")
    assert TRITON_MODULE not in sys.modules


def test_triton_missing_is_a_missing_dependency(monkeypatch):
    monkeypatch.delitem(sys.modules, TRITON_MODULE, raising=False)
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton -> ImportError
    with pytest.raises(MissingDependencyError, match=r"gcage-fast\[triton\]"):
        dispatch.resolve_kernels("triton", "cpu")


def test_triton_with_interpreter(triton_interpreted):
    ks = dispatch.resolve_kernels("triton", "cpu")
    assert ks.name == "triton" and ks.fuse_cam is triton_interpreted.fuse_cam
    with pytest.raises(EngineError, match="interpreter"):
        dispatch.resolve_kernels("triton", "cuda")
