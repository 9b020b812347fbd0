"""A4: every forward-only CAM method equals its hook/backward reference (relative error <= 1e-4, before
normalisation), on several seeds, batches > 1, every target kind and both CAM layers."""

import pytest
import torch

from gcage_fast.cam.analytic import BaseWithCAM
from gcage_fast.cam.reference import reference_cam
from gcage_fast.cam.targets import parse_target, target_delta, target_value
from gcage_fast.cam.weights import METHODS
from gcage_fast.errors import ConfigError
from gcage_fast.models.registry import _randomise_bn
from gcage_fast.models.susy import SUSY_CLASSES, SuSy

TARGETS = ["fake", "pred", "class:midjourney-images", "logit:diffusiondb", "logit:pred"]


def make_base(seed: int, width: int = 16) -> SuSy:
    torch.manual_seed(seed)
    m = SuSy(num_classes=6, width=width, hidden=64)
    _randomise_bn(m, seed)
    return m.eval()


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("layer", ["layer4", "F"])
def test_analytic_cam_matches_autograd(seed, layer):
    base = make_base(seed)
    x = torch.rand(5, 3, 224, 224, generator=torch.Generator().manual_seed(1000 + seed))
    checked = 0
    for t in TARGETS:
        target = parse_target(t, SUSY_CLASSES)
        for method in METHODS:
            with torch.no_grad():
                probs, cam = BaseWithCAM(base, method, target, layer)(x)
            ref_probs, ref_cam = reference_cam(base, x, method, target, layer)
            assert cam.shape == ref_cam.shape == (5, 7, 7)
            assert ref_cam.abs().max() > 0, "degenerate reference (all-zero CAM) proves nothing"
            assert rel_err(cam, ref_cam) <= 1e-4, (t, method)
            torch.testing.assert_close(probs, ref_probs, rtol=0, atol=1e-6)
            checked += 1
    assert checked == len(TARGETS) * len(METHODS)


def test_analytic_cam_full_size_susy():
    torch.manual_seed(42)
    base = SuSy().eval()  # the published sizes: width 64, MLP 512 -> 256 -> 256 -> 6
    _randomise_bn(base, 42)
    x = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(9))
    target = parse_target("fake", SUSY_CLASSES)
    for method in METHODS:
        with torch.no_grad():
            _, cam = BaseWithCAM(base, method, target, "layer4")(x)
        _, ref = reference_cam(base, x, method, target, "layer4")
        assert rel_err(cam, ref) <= 1e-4, method


def test_activation_outputs_reproduce_the_cam():
    base = make_base(3)
    x = torch.rand(4, 3, 224, 224)
    target = parse_target("fake", SUSY_CLASSES)
    with torch.no_grad():
        probs, cam, acts, alpha = BaseWithCAM(base, "gradcam++", target, "F", with_activations=True)(x)
    torch.testing.assert_close(cam, torch.relu(torch.einsum("nk,nkhw->nhw", alpha, acts)))
    assert acts.shape == (4, 128, 7, 7) and alpha.shape == (4, 128)


def test_target_delta_matches_autograd():
    z = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    p = torch.softmax(z, dim=1)
    for t in TARGETS:
        target = parse_target(t, SUSY_CLASSES)
        (g,) = torch.autograd.grad(target_value(target, z, p).sum(), z, retain_graph=True)
        torch.testing.assert_close(target_delta(target, p.detach()), g)


@pytest.mark.parametrize("text,message", [
    ("class:nope", "unknown class 'nope' in CAM target 'class:nope'; classes: authentic, dalle-3-images"),
    ("banana", "invalid CAM target 'banana'; use fake, pred, class:NAME, logit:NAME or logit:pred"),
])
def test_bad_targets_have_clear_errors(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_target(text, SUSY_CLASSES)
    assert str(exc.value).startswith(message)
