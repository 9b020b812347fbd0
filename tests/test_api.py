"""The library API: ``from gcage_fast import ...`` runs a scan and an evaluation with frozen configurations, and
``import gcage_fast`` alone stays light."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

import genimages as gen
import gcage_fast
from helpers import read_rows


def _python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_import_is_light():
    heavy = json.loads(_python(
        "import json, sys\n"
        "import gcage_fast\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.partition('.')[0] in "
        "('torch', 'numpy', 'onnxruntime', 'pyarrow', 'PIL', 'click'))))"))
    assert heavy == []


def test_every_public_name_resolves():
    assert len(set(gcage_fast.__all__)) == len(gcage_fast.__all__)
    for name in gcage_fast.__all__:
        assert getattr(gcage_fast, name) is not None, name
    assert set(gcage_fast.__all__) <= set(dir(gcage_fast))
    assert issubclass(gcage_fast.ConfigError, gcage_fast.GcageError)
    assert issubclass(gcage_fast.MetricError, gcage_fast.GcageError)
    with pytest.raises(AttributeError):
        gcage_fast.no_such_name  # noqa: B018


def test_configs_are_frozen():
    for cls in (gcage_fast.ScanConfig, gcage_fast.Limits, gcage_fast.EvalConfig):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls


@pytest.mark.parametrize("first", ["import gcage_fast.scanning.local", "pass"])
def test_scan_is_the_function_whatever_was_imported_first(first):
    """The package is ``gcage_fast.scanning``, so importing it never rebinds the public ``gcage_fast.scan``."""
    assert _python(f"{first}\n"
                   "import gcage_fast\n"
                   "from gcage_fast import scan\n"
                   "from gcage_fast.scanning.local import scan as scan_function\n"
                   "print(scan is scan_function is gcage_fast.scan)") == "True"


def test_scan_through_the_public_api(tmp_path, tiny_model_dir):
    from gcage_fast import Limits, OutputError, ScanConfig, ScanProgress, ScanSummary, scan

    src = tmp_path / "src"
    for i in range(3):
        gen.save_image(src / f"{i}.jpg", 260, 240, i)
    gen.not_an_image(src / "bad.jpg")
    config = ScanConfig(inputs=(str(src),), output=str(tmp_path / "out"), model=str(tiny_model_dir), workers=0,
                        limits=Limits(timeout_s=120.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 2  # type: ignore[misc]
    seen: list[ScanProgress] = []
    summary = scan(config, progress=seen.append)
    assert isinstance(summary, ScanSummary)
    assert summary.n_inputs == 4 and summary.status == {"ok": 3, "error": 1}
    assert len(read_rows(tmp_path / "out")) == 4
    assert all(isinstance(p, ScanProgress) for p in seen)
    with pytest.raises(OutputError, match="not empty"):  # a second scan into the same output, without resume
        scan(config)
    resumed = scan(dataclasses.replace(config, mode="resume"))
    assert resumed.resumed and resumed.processed == 0 and resumed.status == summary.status


def test_eval_through_the_public_api(tmp_path, tiny_model_dir):
    from gcage_fast import ConfigError, EvalConfig, evaluate

    data = gen.make_labelled_set(tmp_path / "data", n_per_class=3, seed=4, size=224)
    report = evaluate(EvalConfig(data=str(data), model=str(tiny_model_dir), workers=0))
    assert report["data"]["n_images"] == 6
    assert set(report["results"]) == {"gcage", "base", "fused"}
    assert report["results"]["gcage"]["none"][str(report["top_k"][0])]["all"]["n_unscanned"] == 0
    with pytest.raises(ConfigError, match="split"):
        evaluate(EvalConfig(data=str(data), split="holdout"))


def test_explain_through_the_public_api(tmp_path, tiny_model_dir):
    from PIL import Image

    from gcage_fast import ConfigError, ExplainConfig, ExplainOptions, Explanation, explain_image

    src = gen.save_image(tmp_path / "a.jpg", 300, 260, 5)
    out = tmp_path / "why.png"
    config = ExplainConfig(image=str(src), output=str(out), json_path=str(tmp_path / "why.json"),
                           model=str(tiny_model_dir), options=ExplainOptions(methods=("gradcam", "eigencam")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.image = "b.jpg"  # type: ignore[misc]
    expl = explain_image(config)
    assert isinstance(expl, Explanation) and expl.score.verdict in ("real", "fake")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 0
    assert json.loads((tmp_path / "why.json").read_text())["p_fake"] == pytest.approx(expl.score.p_fake)
    with pytest.raises(ConfigError, match="unknown CAM method"):
        explain_image(ExplainConfig(image=str(src), options=ExplainOptions(methods=("nope",))))
