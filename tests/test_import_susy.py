"""A2: a TorchScript archive of our SuSy imports strictly through `gcage-fast import-susy`; a renamed attribute fails."""

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.nn import functional as F

from gcage_fast.cli import cli
from gcage_fast.models.registry import load_model
from gcage_fast.models.susy import SUSY_CLASSES, FeatureExtractorStaircase, SuSy


def _scripted(model: nn.Module, path):
    model.eval()
    torch.jit.save(torch.jit.script(model), str(path))
    return path


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


class RenamedMLP(nn.Module):
    """The published MLP with fc1 renamed to fc_1."""

    def __init__(self) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(512, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 6)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.dropout(F.relu(self.fc2(self.dropout(F.relu(self.fc_1(x)))))))


class RenamedStaircase(FeatureExtractorStaircase):
    """The published feature extractor with f44 renamed to f_44."""

    def __init__(self) -> None:
        super().__init__()
        self.f_44 = self.f44
        del self.f44

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stages[0](x)
        s1 = self.stages[1](s0)
        s2 = self.stages[2](s1)
        s3 = self.stages[3](s2)
        s4 = self.stages[4](s3)
        f1 = self.f14(self.f13(self.f12(self.f11(s0) + s1) + s2) + s3)
        f2 = self.f24(self.f23(self.f22(s1) + s2) + s3)
        f3 = self.f34(self.f33(s2) + s3)
        return s4, f1 + f2 + f3 + self.f_44(s3) + s4


@pytest.fixture(scope="module")
def scripted_susy(tmp_path_factory):
    path = tmp_path_factory.mktemp("jit") / "SuSy.pt"
    return _scripted(_randomised(SuSy(), seed=11), path)


def test_import_susy_strict_and_equal(scripted_susy, tmp_path):
    out = tmp_path / "susy"
    res = CliRunner().invoke(cli, ["import-susy", str(scripted_susy), "-o", str(out), "--trust-torchscript"])
    assert res.exit_code == 0, res.output
    assert "368 state_dict keys" in res.output
    spec = json.loads((out / "model.json").read_text())
    assert spec["class_names"] == list(SUSY_CLASSES)
    assert spec["head"] is None and spec["base"]["width"] == 64

    ours = load_model(out)
    theirs = torch.jit.load(str(scripted_susy)).eval()
    for seed in (0, 1):
        x = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(100 + seed))
        with torch.no_grad():
            diff = (ours.base(x) - theirs(x)).abs().max().item()
        assert diff <= 1e-5


def test_import_requires_explicit_trust(scripted_susy, tmp_path):
    res = CliRunner().invoke(cli, ["import-susy", str(scripted_susy), "-o", str(tmp_path / "x")])
    assert res.exit_code == 1
    assert "Error: SuSy.pt is a TorchScript archive, which contains code; pass --trust-torchscript" in res.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("variant", ["mlp.fc1", "feature_extractor.f44"])
def test_renamed_attribute_is_rejected(variant, tmp_path):
    model = SuSy()
    if variant == "mlp.fc1":
        model.mlp = RenamedMLP()
        missing, unexpected = "mlp.fc1.weight", "mlp.fc_1.weight"
    else:
        model.feature_extractor = RenamedStaircase()
        missing, unexpected = "feature_extractor.f44.0.weight", "feature_extractor.f_44.0.weight"
    path = _scripted(_randomised(model, seed=2), tmp_path / "renamed.pt")
    res = CliRunner().invoke(cli, ["import-susy", str(path), "-o", str(tmp_path / "out"), "--trust-torchscript"])
    assert res.exit_code == 1
    assert "Error: the TorchScript state_dict does not match SuSy's attribute names" in res.output
    assert missing in res.output and unexpected in res.output
    assert not (tmp_path / "out" / "model.json").exists()
