"""Labelled-set layouts and hash-based splits."""

from pathlib import Path

import pytest

import genimages as gen
from gcage_fast.evaluation.datasets import load_labelled, split_of
from gcage_fast.errors import InputError
from gcage_fast.hashing import sha256_file

SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


def _img(path, seed):
    return gen.save_image(path, 240, 240, seed)


def test_ai_real_layout_with_generators(tmp_path):
    _img(tmp_path / "ai" / "sdxl" / "a.jpg", 1)
    _img(tmp_path / "ai" / "b.jpg", 2)
    _img(tmp_path / "real" / "coco" / "c.jpg", 3)
    (tmp_path / "real" / ".hidden").write_text("x")
    ds = load_labelled(tmp_path)
    assert ds.layout == "ai-real"
    assert [(i.relpath, i.label, i.generator) for i in ds.items] == [
        ("ai/b.jpg", 1, None), ("ai/sdxl/a.jpg", 1, "sdxl"), ("real/coco/c.jpg", 0, None)]
    assert ds.generators == ["sdxl"]
    assert [i.relpath for i in ds.subset_for_generator("sdxl")] == ["ai/sdxl/a.jpg", "real/coco/c.jpg"]


def test_cnndetection_layouts(tmp_path):
    for g in ("progan", "stylegan"):
        _img(tmp_path / g / "0_real" / "r.png", 1)
        _img(tmp_path / g / "1_fake" / "f.png", 2)
    ds = load_labelled(tmp_path)
    assert ds.layout == "cnndetection" and ds.generators == ["progan", "stylegan"]
    sub = ds.subset_for_generator("stylegan")
    assert [i.relpath for i in sub] == ["stylegan/0_real/r.png", "stylegan/1_fake/f.png"]
    flat = tmp_path / "flat"
    _img(flat / "0_real" / "r.png", 3)
    _img(flat / "1_fake" / "f.png", 4)
    assert [(i.label, i.generator) for i in load_labelled(flat).items] == [(0, None), (1, None)]


def test_manifest_layout_and_errors(tmp_path):
    _img(tmp_path / "x" / "1.jpg", 1)
    _img(tmp_path / "x" / "2.jpg", 2)
    (tmp_path / "manifest.csv").write_text("relpath,label,generator\nx/1.jpg,ai,gan\nx/2.jpg,real,\n")
    ds = load_labelled(tmp_path)
    assert [(i.relpath, i.label, i.generator) for i in ds.items] == [("x/1.jpg", 1, "gan"), ("x/2.jpg", 0, None)]
    (tmp_path / "manifest.csv").write_text("relpath,label\nx/1.jpg,maybe\n")
    with pytest.raises(InputError, match=r"manifest.csv:2: label 'maybe' is neither fake"):
        load_labelled(tmp_path)
    (tmp_path / "manifest.csv").write_text("relpath,label\n../../etc/passwd,real\n")
    with pytest.raises(InputError, match="leaves the dataset directory"):
        load_labelled(tmp_path)
    with pytest.raises(InputError, match="cannot tell real from fake"):
        load_labelled(tmp_path / "x")


def test_splits_follow_content_not_names(tmp_path):
    p = _img(tmp_path / "ai" / "a.jpg", 7)
    _img(tmp_path / "real" / "b.jpg", 8)
    before = {i.relpath: split_of(i.digest()) for i in load_labelled(tmp_path).items}
    p.rename(tmp_path / "ai" / "renamed.jpg")
    for k in range(20):
        _img(tmp_path / "real" / f"extra{k}.jpg", 100 + k)
    after = {i.relpath: split_of(i.digest()) for i in load_labelled(tmp_path).items}
    assert after["ai/renamed.jpg"] == before["ai/a.jpg"] and after["real/b.jpg"] == before["real/b.jpg"]
    counts = {s: sum(split_of(f"{n:064x}") == s for n in range(3000)) for s in ("train", "val", "test")}
    assert abs(counts["train"] / 3000 - 0.7) < 0.03 and abs(counts["test"] / 3000 - 0.15) < 0.03


@pytest.mark.skipif(not SHARED_FACES.is_dir(), reason="../shared/data/faces is not present")
def test_faces_manifest_and_committed_split():
    ds = load_labelled(SHARED_FACES)
    assert ds.layout == "manifest" and len(ds.items) == 1289
    assert ds.generators == ["stylegan2-thispersondoesnotexist"]
    item = ds.items[0]
    assert item.sha256 == sha256_file(item.path)  # the manifest's hashes are the files'
    committed = Path(__file__).resolve().parents[1] / "gcage_fast" / "models" / "bundled" / "faces-gcage" / "split.csv"
    if committed.is_file():
        rows = dict(line.split(",") for line in committed.read_text().split()[1:])
        assert {i.sha256: split_of(i.sha256) for i in ds.items} == rows
