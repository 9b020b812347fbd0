"""The scan's device path (patch selection, gather and CAM fusion by gcage_fast.kernels, as on a GPU) gives the
same rows as the default CPU path: exactly with the torch reference kernels (within 1e-5), within 1e-4 with the
Triton kernels under the interpreter."""

from __future__ import annotations

import json
import os

import pytest
from genimages import save_image
from helpers import read_rows, run_cli

from gcage_fast.config import ScanConfig
from gcage_fast.errors import ConfigError
from gcage_fast.scanning.local import scan
from gcage_fast.scoring.factory import uses_device_path


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("dev-in")
    for i, (w, h) in enumerate([(300, 300), (470, 250), (224, 224), (700, 460), (150, 90)]):
        save_image(d / f"img{i}.jpg", w, h, seed=40 + i)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return d


def _rows(out):
    return {r["path"]: r for r in read_rows(out)}


def _same(ref, got, tol):
    assert ref.keys() == got.keys()
    for path, r in ref.items():
        g = got[path]
        assert (r["status"], r["error_code"]) == (g["status"], g["error_code"])
        if r["status"] != "ok":
            continue
        assert r["n_patches_total"] == g["n_patches_total"] and r["n_patches_scanned"] == g["n_patches_scanned"]
        assert [(p["x"], p["y"]) for p in r["patches"]] == [(p["x"], p["y"]) for p in g["patches"]]
        assert abs(r["p_fake"] - g["p_fake"]) <= tol and abs(r["base_p_fake"] - g["base_p_fake"]) <= tol
        for pr, pg in zip(r["patches"], g["patches"]):
            assert abs(pr["contrast"] - pg["contrast"]) <= 1e-9 * max(1.0, pr["contrast"])


def test_reference_kernels_match_the_cpu_path(small_set, tiny_model_dir, tmp_path):
    base = dict(inputs=(str(small_set),), model=str(tiny_model_dir), workers=0, batch_size=4, top_k=3)
    scan(ScanConfig(output=str(tmp_path / "cpu"), **base))
    assert not uses_device_path(ScanConfig(output="o", **base))
    scan(ScanConfig(output=str(tmp_path / "dev"), kernel_impl="reference", **base))
    _same(_rows(tmp_path / "cpu"), _rows(tmp_path / "dev"), 1e-5)
    run = json.loads((tmp_path / "dev" / "run.json").read_text())
    assert run["kernels"]["impl"] == "reference" and run["kernels"]["requested"] == "reference"
    assert "kernels" not in json.loads((tmp_path / "cpu" / "run.json").read_text())


def test_unknown_kernel_impl_is_refused():
    with pytest.raises(ConfigError, match="unknown --kernel-impl 'opencl'; choose auto, reference, triton, cuda"):
        ScanConfig(inputs=("x",), output="o", kernel_impl="opencl").validate()


def test_triton_kernels_in_a_scan_under_the_interpreter(small_set, tiny_model_dir, tmp_path):
    pytest.importorskip("triton")
    args = ("scan", small_set, "--model", tiny_model_dir, "--workers", "0", "--batch-size", "4", "--top-k", "2")
    run_cli(*args, "-o", tmp_path / "cpu")
    run_cli(*args, "-o", tmp_path / "tri", env={"GCAGE_KERNEL_IMPL": "triton", "TRITON_INTERPRET": "1"})
    _same(_rows(tmp_path / "cpu"), _rows(tmp_path / "tri"), 1e-4)
    run = json.loads((tmp_path / "tri" / "run.json").read_text())
    assert run["kernels"]["impl"] == "triton" and "interpret" in run["kernels"]["detail"]


def test_triton_named_without_interpreter_on_cpu_fails_loudly(small_set, tiny_model_dir, tmp_path):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = run_cli("scan", small_set, "--model", tiny_model_dir, "-o", tmp_path / "x", "--kernel-impl", "triton",
                  env=env | {"TRITON_INTERPRET": "0"}, check=False)
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "triton" in res.stderr.lower() and "Traceback" not in res.stderr
