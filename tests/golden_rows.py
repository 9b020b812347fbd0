"""Golden rows: what a scan of the bundled samples and of a generated mixed directory writes, column by column.

The golden file ``tests/golden/scan_rows.json`` was written by this script from the code before the layout
change of the architecture work and is the behaviour every later version must keep
(``tests/test_golden_rows.py``). Rewrite it only for a change that is meant to change rows, and say so in the
commit:

    python tests/golden_rows.py write tests/golden/scan_rows.json

Rows are compared with ``run_id`` and ``scanned_at`` aside; paths are made relative to the scanned root (the
tree is generated in a temporary directory), ``input_id`` is checked as the hash of the path instead of by value,
and floats are compared within ``FLOAT_TOL`` (ONNX Runtime's kernels differ in the last bits between CPUs).
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import genarchives
import genimages as gen

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "gcage_fast" / "samples" / "images"
#: Relative tolerance for float columns (scores, contrasts, probabilities).
FLOAT_TOL = 1e-5
#: Columns that legitimately differ between two runs.
VOLATILE = ("run_id", "scanned_at")
#: Columns that carry the scanned root's absolute path.
PATH_COLUMNS = ("path", "path_bytes", "locator", "input_root")


def make_mixed_tree(root: Path) -> Path:
    """Valid images of several formats and sizes (one smaller than a patch), broken files, a tar and a zip with
    a good, a broken and a nested member, and a non-ASCII name. Seeded: the same bytes on every machine."""
    root = Path(root)
    gen.make_corpus(root / "corpus", n_images=12, seed=7)
    gen.save_image(root / "small" / "tiny_150x90.png", 150, 90, 11, "PNG")
    gen.save_image(root / "names" / "café ünï.jpg", 300, 260, 12, "JPEG")
    (root / "archives").mkdir()
    genarchives.tar_with(root / "archives" / "batch.tar", [
        ("a/one.jpg", genarchives.jpeg(21), tarfile.REGTYPE, ""),
        ("a/broken.jpg", genarchives.jpeg(22)[:300], tarfile.REGTYPE, ""),
        ("notes.txt", b"not an image\n", tarfile.REGTYPE, ""),
    ])
    (root / "archives" / "batch.zip").write_bytes(_zip([("two.jpg", genarchives.jpeg(23)),
                                                        ("inner.zip", _zip([("x.jpg", genarchives.jpeg(24))]))]))
    return root


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    """A zip with fixed member dates (``writestr`` with a name stamps the current time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def scan_rows(root: Path, out: Path) -> list[dict]:
    """Scan ``root`` with the bundled model through the command line, as a user would; rows sorted by path."""
    import pyarrow.dataset as ds

    cmd = [sys.executable, "-m", "gcage_fast", "scan", str(root), "-o", str(out), "--workers", "1",
           "--shard-size", "8", "--quiet"]
    subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="2"))
    parts = out / "results" if (out / "results").is_dir() else out / "parts"
    rows = ds.dataset(parts, format="parquet").to_table().to_pylist()
    return sorted(rows, key=lambda r: (r["path"], r.get("member_index") or -1))


def normalise(rows: list[dict], root: Path) -> list[dict]:
    """Rows as JSON-able values, volatile columns dropped, the root stripped from paths."""
    from gcage_fast.ingest.sources import input_id

    prefix = str(root).rstrip("/") + "/"
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k not in VOLATILE}
        r["input_id_is_locator_hash"] = r.pop("input_id") == input_id(r["path_bytes"], r["member_bytes"],
                                                                       r["member_index"])
        r["path"] = r["path"].removeprefix(prefix)
        for col in ("locator", "input_root"):  # schema 4: absolute too
            if col in r:
                r[col] = "<root>" if r[col] == prefix.rstrip("/") else r[col].removeprefix(prefix)
        r["path_bytes"] = bytes(r["path_bytes"]).removeprefix(os.fsencode(prefix)).decode("utf-8", "replace")
        if r.get("member_bytes") is not None:
            r["member_bytes"] = bytes(r["member_bytes"]).decode("utf-8", "replace")
        out.append(_jsonable(r))
    return out


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def compare(expected, actual, where: str = "") -> list[str]:
    """Differences between two normalised values: floats within FLOAT_TOL, everything else exactly."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        diffs = []
        for k in sorted(set(expected) | set(actual)):
            if k not in actual or k not in expected:
                diffs.append(f"{where}.{k}: column {'missing' if k not in actual else 'added'}")
                continue
            diffs += compare(expected[k], actual[k], f"{where}.{k}")
        return diffs
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(expected)} items expected, {len(actual)} found"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in compare(e, a, f"{where}[{i}]")]
    if isinstance(expected, float) or isinstance(actual, float):
        if expected is None or actual is None or not math.isclose(expected, actual, rel_tol=FLOAT_TOL,
                                                                   abs_tol=FLOAT_TOL):
            return [f"{where}: expected {expected!r}, found {actual!r}"]
        return []
    return [] if expected == actual else [f"{where}: expected {expected!r}, found {actual!r}"]


def collect(workdir: Path) -> dict[str, list[dict]]:
    """Normalised rows of both scans (the samples and the generated mixed tree)."""
    tree = make_mixed_tree(workdir / "mixed")
    return {
        "samples": normalise(scan_rows(SAMPLES, workdir / "out-samples"), SAMPLES),
        "mixed": normalise(scan_rows(tree, workdir / "out-mixed"), tree),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "write":
        sys.stderr.write(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        rows = collect(Path(tmp))
    Path(argv[2]).parent.mkdir(parents=True, exist_ok=True)
    Path(argv[2]).write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
