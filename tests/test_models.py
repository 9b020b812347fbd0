"""Model architecture facts: torchvision-compatible ResNet-18 keys, SuSy's published names and sizes, the head."""

import torch

from gcage_fast.models.head import GCageHead, count_macs
from gcage_fast.models.resnet import resnet18
from gcage_fast.models.susy import SuSy
from gcage_fast.models.weights import load_weights, save_weights


def torchvision_resnet18_keys():
    """torchvision's resnet18 state_dict key order, written out from its naming convention."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{b}" for b in bn]
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}."
            keys += [p + "conv1.weight"] + [p + f"bn1.{b}" for b in bn]
            keys += [p + "conv2.weight"] + [p + f"bn2.{b}" for b in bn]
            if layer > 1 and block == 0:
                keys += [p + "downsample.0.weight"] + [p + f"downsample.1.{b}" for b in bn]
    return keys + ["fc.weight", "fc.bias"]


def test_resnet18_keys_and_shapes_match_torchvision():
    sd = resnet18().state_dict()
    assert list(sd) == torchvision_resnet18_keys()
    assert len(sd) == 122
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    assert sd["fc.weight"].shape == (1000, 512)


def test_susy_published_names_sizes_and_key_count():
    m = SuSy()
    sd = m.state_dict()
    assert len(sd) == 368  # including the aliases of shared modules (METHOD.md §1.5)
    assert sum(p.numel() for p in m.parameters()) == 12_658_974
    assert [n for n, _ in m.named_children()] == ["feature_extractor", "mlp", "softmax"]
    assert [n for n, _ in m.feature_extractor.named_children()] == [
        "resnet_model", "stages", "f11", "f12", "f22", "f13", "f23", "f33", "f14", "f24", "f34", "f44",
        "bottlenecks", "gap"]
    assert [n for n, _ in m.mlp.named_children()] == ["fc1", "fc2", "fc3", "dropout"]
    shapes = {
        "feature_extractor.f11.1.weight": (32, 16, 3, 3),
        "feature_extractor.f12.2.weight": (128, 32, 1, 1),
        "feature_extractor.f33.0.weight": (32, 128, 1, 1),
        "feature_extractor.f44.1.weight": (128, 64, 3, 3),
        "feature_extractor.f44.2.bias": (512,),
        "mlp.fc1.weight": (256, 512),
        "mlp.fc3.weight": (6, 256),
        "feature_extractor.resnet_model.fc.weight": (1000, 512),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    # stages and bottlenecks share the tensors of resnet_model and f11..f44
    assert sd["feature_extractor.stages.0.0.weight"].data_ptr() == sd[
        "feature_extractor.resnet_model.conv1.weight"].data_ptr()
    assert sd["feature_extractor.bottlenecks.9.2.weight"].data_ptr() == sd[
        "feature_extractor.f44.2.weight"].data_ptr()


def test_susy_outputs_probabilities_and_features_shapes():
    m = SuSy().eval()
    x = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        p = m(x)
        s4, fmap = m.feature_extractor.features(x)
        pooled = m.feature_extractor(x)
    assert p.shape == (3, 6)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(3))
    assert s4.shape == fmap.shape == (3, 512, 7, 7)
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(p, torch.softmax(m.logits(x), dim=1))


def test_head_is_small_next_to_susy():
    head = GCageHead()
    macs_head = count_macs(head, (4, 224, 224))
    macs_susy = count_macs(SuSy(), (3, 224, 224))
    assert macs_susy == 1_928_160_768
    assert macs_head == 50_577_536
    assert macs_head / macs_susy < 0.03
    out = head.eval()(torch.rand(5, 4, 224, 224))
    assert out.shape == (5,)


def test_safetensors_roundtrip_restores_aliases(tmp_path):
    a, b = SuSy(width=8, hidden=16).eval(), SuSy(width=8, hidden=16).eval()
    save_weights(a, tmp_path / "w.safetensors")
    load_weights(b, tmp_path / "w.safetensors")
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    # the shared tensors are still shared after loading
    sd = b.state_dict()
    assert sd["feature_extractor.stages.4.1.conv2.weight"].data_ptr() == sd[
        "feature_extractor.resnet_model.layer4.1.conv2.weight"].data_ptr()
