"""E1: the bad-input catalogue (RELIABILITY.md §1). Each case is generated, scanned with the real CLI next to good
files, and must give its exact row while every other input still gets its own."""

import os
from pathlib import Path

import numpy as np
import pytest

import genbad as bad
import genimages as gen
from helpers import permissions_enforced, read_rows, run_cli

# name -> (generator, status, error_code, flags that must be present)
CASES = {
    # 1a decoder-level
    "bomb_20000.png": (lambda p: bad.pixel_bomb(p, 20000), "error", "limit.pixels", ()),  # #1
    "bomb_10000.png": (lambda p: bad.pixel_bomb(p, 10000), "error", "limit.pixels", ()),  # #1, warning path
    "ztxt_bomb.png": (bad.text_chunk_bomb, "error", "limit.text_chunk", ()),  # #2
    "doc.pdf.jpg": (lambda p: bad.magic_file(p, b"%PDF-1.7\n"), "skipped", "decode.format_not_allowed", ()),  # #3
    "layers.png": (lambda p: bad.magic_file(p, b"8BPS"), "skipped", "decode.format_not_allowed", ()),  # #3
    "eps.jpg": (lambda p: bad.magic_file(p, b"%!PS-Adobe-3.0 EPSF-3.0"), "skipped", "decode.format_not_allowed", ()),
    "fits.jpg": (lambda p: bad.magic_file(p, b"SIMPLE  =                    T"), "skipped",
                 "decode.format_not_allowed", ()),
    "cut_half.jpg": (lambda p: gen.truncated(p, "JPEG", 1), "error", "decode.truncated", ()),  # #4
    "cut_before_eoi.jpg": (lambda p: bad.jpeg_cut_before_eoi(p, 2), "error", "decode.truncated", ()),  # #4
    "cut_half.png": (lambda p: gen.truncated(p, "PNG", 3), "error", "decode.truncated", ()),  # #4
    "cut_half.webp": (lambda p: gen.truncated(p, "WEBP", 4), "error", "decode.truncated", ()),  # #4
    "flipped_idat.png": (lambda p: bad.png_flipped_idat(p, 5), "error", "decode.corrupt", ()),  # #4/#8
    "empty.jpg": (gen.zero_byte, "error", "decode.empty", ()),  # #5
    "page.jpg": (gen.not_an_image, "error", "decode.unidentified", ()),  # #6
    "noise.jpg": (lambda p: bad.random_bytes(p, 6), "error", "decode.unidentified", ()),  # #6/#8
    "png_named.jpg": (lambda p: bad.png_as_jpg(p, 7), "ok", None, ("format.extension_mismatch",)),  # #7
    "tiff_named.png": (lambda p: bad.tiff_as_png(p, 8), "ok", None, ("format.extension_mismatch",)),  # #7
    "with_zip.jpg": (lambda p: bad.appended_zip(p, 9), "ok", None, ("trailing.bytes",)),  # #7
    "one_pixel.png": (lambda p: bad.sized_png(p, 1, 1), "ok", None, ()),  # #9 (padded)
    "seven.png": (lambda p: bad.sized_png(p, 7, 7), "ok", None, ()),  # #9
    "zero_width.png": (bad.zero_width_png, "error", "decode.corrupt", ()),  # #9
    "one_by_4000.png": (lambda p: bad.sized_png(p, 1, 4000), "error", "limit.aspect", ()),  # #9/#11
    "stripe.png": (lambda p: bad.sized_png(p, 100000, 2), "error", "limit.aspect", ()),  # #11
    "exif_0.jpg": (lambda p: bad.exif_raw(p, 1, b"\x00\x00"), "ok", None, ("exif.invalid",)),  # #12
    "exif_9.jpg": (lambda p: bad.exif_raw(p, 2, b"\x00\x09"), "ok", None, ("exif.invalid",)),  # #12
    "exif_65535.jpg": (lambda p: bad.exif_raw(p, 3, b"\xff\xff"), "ok", None, ("exif.invalid",)),  # #12
    "exif_doubled.jpg": (lambda p: bad.doubled_exif_header(p, 4), "ok", None, ()),  # #12
    "cmyk.jpg": (lambda p: gen.save_image(p, 300, 240, 10, "JPEG", "CMYK"), "ok", None, ()),  # #13
    "gray16.png": (lambda p: gen.gray16_png(p, 300, 260, 11), "ok", None, ()),  # #14
    "float.tif": (lambda p: gen.float_tiff(p, 12), "error", "decode.unsupported_mode", ()),  # #14
    "palette_trns.png": (lambda p: bad.palette_trns(p, 13), "ok", None, ()),  # #15
    "invisible.png": (lambda p: bad.transparent_rgba(p, 14), "ok", None, ("alpha.transparent",)),  # #15
    "la.png": (lambda p: gen.save_image(p, 300, 240, 15, "PNG", "LA"), "ok", None, ()),  # #15
    "one_bit.png": (lambda p: bad.one_bit(p, 16), "ok", None, ()),  # #15
    "gray.png": (lambda p: gen.save_image(p, 300, 240, 17, "PNG", "L"), "ok", None, ()),  # #15
    "anim.gif": (lambda p: gen.animated_gif(p, 18, frames=3), "ok", None, ("frames.unscanned",)),  # #16
    "frames_2000.gif": (bad.many_frame_gif, "ok", None, ("frames.unscanned",)),  # #16
    "photo.heic": (lambda p: bad.magic_file(p, b"\x00\x00\x00\x18ftypheic"), "skipped",
                   "decode.format_not_allowed", ()),  # #17
    "lossy.webp": (lambda p: gen.save_image(p, 320, 240, 19, "WEBP"), "ok", None, ()),  # #18
    "hostile_text.png": (lambda p: bad.png_with_hostile_text(p, 20), "ok", None, ()),  # #19
    # 1b filesystem-level
    "pipe.jpg": (lambda p: os.mkfifo(p), "skipped", "fs.not_regular", ()),  # #20
    "sock.jpg": (bad.unix_socket, "skipped", "fs.not_regular", ()),  # #21
    "link.jpg": (lambda p: os.symlink("good_0.jpg", p), "skipped", "fs.symlink_skipped", ()),  # #22
    "devzero.jpg": (lambda p: os.symlink("/dev/zero", p), "skipped", "fs.symlink_skipped", ()),  # #21/#22
}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("catalogue")
    src = root / "src"
    src.mkdir()
    for i in range(4):
        gen.save_image(src / f"good_{i}.jpg", 300 + 40 * i, 260, 100 + i)
    for name, (make, *_rest) in CASES.items():
        make(src / name)
    weird = bad.weird_names(src, 21)  # #25
    out = root / "out"
    res = run_cli("scan", src, "-o", out, "--model", tiny_model_dir, "--workers", "2", "--quiet", timeout=300)
    return src, out, weird, res


def test_every_case_has_its_exact_row(catalogue):
    src, out, weird, _ = catalogue
    rows = {r["path_bytes"]: r for r in read_rows(out)}
    assert len(rows) == len(CASES) + 4 + len(weird)
    for name, (_, status, code, flags) in CASES.items():
        row = rows[os.fsencode(src / name)]
        assert (row["status"], row["error_code"]) == (status, code), (name, row["error_detail"])
        assert set(flags) <= set(row["flags"]), (name, row["flags"])
        if status != "ok":
            assert row["p_fake"] is None and row["verdict"] is None and row["patches"] is None
    for i in range(4):
        assert rows[os.fsencode(src / f"good_{i}.jpg")]["status"] == "ok"
    run_cli("verify", out)


def test_recorded_details(catalogue):
    src, out, weird, res = catalogue
    rows = {r["path_bytes"]: r for r in read_rows(out)}

    def row(name):
        return rows[os.fsencode(src / name)]

    assert row("with_zip.jpg")["trailing_bytes"] > 100
    assert row("png_named.jpg")["format"] == "PNG" and row("tiff_named.png")["format"] == "TIFF"
    assert row("one_pixel.png")["padded"] is True and row("one_pixel.png")["n_patches_scanned"] == 1
    assert (row("frames_2000.gif")["n_frames"], row("frames_2000.gif")["frames_scanned"]) == (2000, 1)
    assert row("gray16.png")["mode"] == "I;16" and row("cmyk.jpg")["mode"] == "CMYK"
    assert row("palette_trns.png")["mode"] == "P" and row("invisible.png")["mode"] == "RGBA"
    assert row("doc.pdf.jpg")["format"] == "PDF"
    for p in weird:  # raw bytes kept, display escaped
        r = rows[p]
        assert r["status"] == "ok" and r["path"].isprintable()
    assert rows[os.fsencode(src) + b"/caf\xe9.jpg"]["path"].endswith("caf\\xe9.jpg")
    assert rows[os.fsencode(src) + b"/\x1b[2Jclear.jpg"]["path"].endswith("\\x1b[2Jclear.jpg")
    assert "\x1b" not in res.stdout + res.stderr  # nothing raw reaches the terminal


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_are_applied_without_rewriting_exif(tmp_path, tiny_model_dir, orientation):
    p = gen.exif_jpeg(tmp_path / "src" / "o.jpg", 360, 240, orientation, orientation)
    out = tmp_path / "out"
    run_cli("scan", tmp_path / "src", "-o", out, "--model", tiny_model_dir, "--workers", "0", "--quiet",
            "--heatmaps", "png")
    (row,) = read_rows(out)
    assert row["exif_orientation"] == orientation
    assert (row["width"], row["height"]) == ((240, 360) if orientation >= 5 else (360, 240))
    heat = next((out / "heatmaps").glob("*/*.png"))
    from PIL import Image

    with Image.open(heat) as im:
        assert im.size == (row["width"], row["height"])  # heatmaps are in display orientation
    with Image.open(p) as im:
        assert im.getexif().get(0x0112) == orientation  # the input is never modified


def test_sixteen_bit_keeps_its_levels(tmp_path):
    from gcage_fast.config import Limits
    from gcage_fast.ingest.decode import decode_rgb

    ramp = (np.arange(65536, dtype=np.uint32).reshape(256, 256)).astype(np.uint16)
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG")
    rgb = decode_rgb(buf.getvalue(), Limits()).rgb
    assert len(np.unique(rgb)) > 200


def test_links_when_followed(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    gen.save_image(src / "real.jpg", 260, 240, 1)
    os.symlink(src / "real.jpg", src / "alias.jpg")
    os.symlink("/dev/zero", src / "zero.jpg")
    os.symlink(src / "gone.jpg", src / "dangling.jpg")
    (src / "sub").mkdir()
    os.symlink("..", src / "sub" / "loop")
    out = tmp_path / "out"
    run_cli("scan", src, "-o", out, "--model", tiny_model_dir, "--workers", "1", "--follow-symlinks", "--quiet",
            timeout=120)
    rows = {Path(r["path"]).name: (r["status"], r["error_code"]) for r in read_rows(out)}
    assert rows == {"real.jpg": ("ok", None), "alias.jpg": ("ok", None), "zero.jpg": ("skipped", "fs.not_regular"),
                    "dangling.jpg": ("error", "fs.vanished"), "loop": ("skipped", "fs.symlink_loop")}


@pytest.mark.skipif(not permissions_enforced(), reason="running as root without setpriv: chmod 000 is not enforced")
def test_unreadable_files_and_directories(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    gen.save_image(src / "ok.jpg", 260, 240, 1)
    gen.unreadable(src / "locked.jpg", 2)
    (src / "closed").mkdir()
    gen.save_image(src / "closed" / "inside.jpg", 260, 240, 3)
    os.chmod(src / "closed", 0)
    out = tmp_path / "out"
    try:
        run_cli("scan", src, "-o", out, "--model", tiny_model_dir, "--workers", "1", "--quiet")
    finally:
        os.chmod(src / "closed", 0o755)
    rows = {Path(r["path"]).name: (r["status"], r["error_code"]) for r in read_rows(out)}
    assert rows == {"ok.jpg": ("ok", None), "locked.jpg": ("error", "fs.permission"),
                    "closed": ("error", "fs.permission")}


def test_file_vanishing_between_plan_and_scan(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    for i in range(3):
        gen.save_image(src / f"{i}.jpg", 260, 240, i)
    out = tmp_path / "out"
    args = ["scan", src, "-o", out, "--model", tiny_model_dir, "--workers", "0", "--quiet"]
    killed = run_cli(*args, env={"GCAGE_FAULT_AT": "after_plan:0"}, check=False)
    assert killed.returncode == -9
    (src / "1.jpg").unlink()
    run_cli(*args, "--resume")
    rows = {Path(r["path"]).name: (r["status"], r["error_code"]) for r in read_rows(out)}
    assert rows == {"0.jpg": ("ok", None), "1.jpg": ("error", "fs.vanished"), "2.jpg": ("ok", None)}


def test_output_inside_the_input_is_refused(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    gen.save_image(src / "a.jpg", 260, 240, 1)
    res = run_cli("scan", src, "-o", src / "results", "--model", tiny_model_dir, check=False)
    assert res.returncode == 1
    assert res.stderr.strip() == (f"Error: the output directory {src / 'results'} is inside the scanned input "
                                  f"{src}; choose an output outside it")
    assert not (src / "results").exists()
