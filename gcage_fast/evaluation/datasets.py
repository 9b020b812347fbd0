"""Labelled image sets for training and evaluation, and deterministic splits.

Layouts (detected in this order):

- ``manifest.csv`` in the root with columns ``relpath,label[,generator][,sha256][,source]``; labels ``ai``/``fake``/
  ``synthetic``/``1`` and ``real``/``authentic``/``0``. ``source`` (or ``source_repo``) names where a file came
  from (a repository, a camera, a website); leave-one-source-out validation holds out one source at a time, and
  a set without the column is one source, named after its folder.
- ``ai/`` and ``real/`` folders; a sub-folder of ``ai/`` names the generator (``ai/stylegan2/x.jpg``). A set of
  one class may have only one of them (when no CNNDetection folder is there either).
- CNNDetection's ``0_real/`` and ``1_fake/`` folders, either in the root or under class/generator folders
  (``progan/0_real``, ``progan/1_fake``); such a folder names the generator of its fakes and groups its reals.

What is an input: in the manifest layout, exactly the rows of the manifest (nothing else in the folder, so a
``manifest.csv``, ``SOURCE.md`` or sidecar beside the images is never scored). In the folder layouts, a file whose
name ends in an image extension (:data:`IMAGE_EXTENSIONS`, any case: it is listed even if it is broken, and is
then counted as unscanned), or whose first bytes are an image signature (JPEG, PNG, GIF, BMP, TIFF, WebP) whatever
its name. Everything else (``README``/``SOURCE.md``, ``.json``/``.txt``/``.csv`` sidecars, a manifest in a class
folder) is skipped, and so are hidden files and folders (names starting with ``.``).

Several sets train one model through :func:`load_pool` (relpaths prefixed by each set's folder name).

Splits hash each file's sha256 (not its name or position), so a file keeps its split when others are added,
renamed or removed, and identical files can never leak across splits.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from gcage_fast.errors import InputError
from gcage_fast.hashing import sha256_file

__all__ = ["LabelledImage", "LabelledSet", "load_labelled", "load_pool", "split_of", "SPLITS", "SPLIT_SALT", "IMAGE_EXTENSIONS",
           "is_image_file"]

SPLITS = ("train", "val", "test")
SPLIT_SALT = "gcage-split-v1"
_FAKE = {"ai", "fake", "synthetic", "generated", "1"}
_REAL = {"real", "authentic", "0"}
#: File name endings a folder layout lists as images (the formats the scanner decodes; compared in lower case).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class LabelledImage:
    """One labelled file. ``label`` is 1 for fake (AI-generated), 0 for real."""

    path: Path
    relpath: str
    label: int
    generator: str | None = None  # for fakes: the generator, when the data names it
    group: str | None = None  # CNNDetection class folder shared by its reals and fakes
    sha256: str | None = None
    source: str | None = None  # where the file came from (manifest column ``source``/``source_repo``)

    def digest(self) -> str:
        return self.sha256 or sha256_file(self.path)


@dataclass
class LabelledSet:
    root: Path
    layout: str
    items: list[LabelledImage]

    @property
    def generators(self) -> list[str]:
        return sorted({i.generator for i in self.items if i.label == 1 and i.generator})

    def split(self, name: str, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> LabelledSet:
        """The items of one split (``train``, ``val``, ``test``; ``all`` returns everything)."""
        if name == "all":
            return self
        if name not in SPLITS:
            raise InputError(f"unknown split {name!r}; choose train, val, test or all")
        return LabelledSet(self.root, self.layout,
                           [i for i in self.items if split_of(i.digest(), fractions) == name])

    def subset_for_generator(self, generator: str) -> list[LabelledImage]:
        """Fakes of ``generator`` with the reals that belong to it (its group, or every ungrouped real)."""
        return [i for i in self.items if (i.label == 1 and i.generator == generator)
                or (i.label == 0 and i.group in (None, generator))]


def split_of(sha256: str, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> str:
    """``train``/``val``/``test`` from the file's sha256 alone."""
    u = int(hashlib.sha256(f"{SPLIT_SALT}:{sha256}".encode()).hexdigest()[:16], 16) / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def _image_signature(head: bytes) -> bool:
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def is_image_file(path: Path) -> bool:
    """True for a file a folder layout lists: an image extension, or (reading 12 bytes) an image signature.
    A file that cannot be read without an image extension is not listed."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            return _image_signature(fh.read(12))
    except OSError:
        return False


def _files(d: Path) -> list[Path]:
    """The image files under ``d`` (:func:`is_image_file`), hidden files and folders skipped, sorted."""
    out = []
    for root, dirs, files in os.walk(d):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        out += [Path(root) / f for f in sorted(files) if not f.startswith(".") and is_image_file(Path(root) / f)]
    return sorted(out)


def _label(text: str, where: str) -> int:
    t = text.strip().lower()
    if t in _FAKE:
        return 1
    if t in _REAL:
        return 0
    raise InputError(f"{where}: label {text!r} is neither fake ({'/'.join(sorted(_FAKE))}) "
                     f"nor real ({'/'.join(sorted(_REAL))})")


def _from_manifest(root: Path, manifest: Path) -> LabelledSet:
    items = []
    with open(manifest, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"relpath", "label"} <= set(reader.fieldnames):
            raise InputError(f"{manifest} needs the columns relpath,label[,generator]")
        for n, row in enumerate(reader, start=2):
            rel = row["relpath"]
            path = (root / rel).resolve()
            if root.resolve() not in path.parents:
                raise InputError(f"{manifest}:{n}: relpath {rel!r} leaves the dataset directory")
            label = _label(row["label"], f"{manifest}:{n}")
            gen = (row.get("generator") or "").strip() or None
            source = (row.get("source") or row.get("source_repo") or "").strip() or None
            items.append(LabelledImage(path, rel, label, gen if label == 1 else None, None,
                                       (row.get("sha256") or "").strip() or None, source))
    return LabelledSet(root, "manifest", items)


def _from_ai_real(root: Path) -> LabelledSet:
    items = []
    for label, d in ((1, root / "ai"), (0, root / "real")):
        for p in _files(d):
            rel = p.relative_to(root).as_posix()
            parts = p.relative_to(d).parts
            gen = parts[0] if label == 1 and len(parts) > 1 else None
            items.append(LabelledImage(p, rel, label, gen))
    return LabelledSet(root, "ai-real", items)


def _from_cnndetection(root: Path) -> LabelledSet:
    groups: list[tuple[str | None, Path]] = []
    if (root / "0_real").is_dir() or (root / "1_fake").is_dir():
        groups.append((None, root))
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if (sub / "0_real").is_dir() or (sub / "1_fake").is_dir():
            groups.append((sub.name, sub))
    items = []
    for group, d in groups:
        for label, name in ((0, "0_real"), (1, "1_fake")):
            for p in _files(d / name):
                items.append(LabelledImage(p, p.relative_to(root).as_posix(), label,
                                           group if label == 1 else None, group))
    return LabelledSet(root, "cnndetection", items)


def load_labelled(root: str | Path, manifest: str | Path | None = None) -> LabelledSet:
    """Find the layout of ``root`` and list its labelled files (sorted, deterministic)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset directory not found: {root}")
    if manifest is not None or (root / "manifest.csv").is_file():
        ds = _from_manifest(root, Path(manifest) if manifest else root / "manifest.csv")
    elif (root / "ai").is_dir() and (root / "real").is_dir():
        ds = _from_ai_real(root)
    else:
        ds = _from_cnndetection(root)
        if not ds.items and ((root / "ai").is_dir() or (root / "real").is_dir()):
            ds = _from_ai_real(root)  # a set of one class: only ai/ or only real/
        elif not ds.items:
            raise InputError(f"cannot tell real from fake in {root}: expected manifest.csv (relpath,label), "
                             "ai/ and/or real/ folders, or 0_real/ and/or 1_fake/ folders")
    if not ds.items:
        raise InputError(f"no images found in {root} ({ds.layout} layout)")
    return ds


def load_pool(roots: list[str | Path] | tuple[str | Path, ...]) -> LabelledSet:
    """Several labelled sets as one: relpaths become ``<folder name>/<relpath>``, and an item without a
    ``source`` gets its set's folder name. One root returns that set unchanged (apart from the default source).

    Raises:
        InputError: no roots, a root that is not a set, or two roots with the same folder name.
    """
    if not roots:
        raise InputError("no dataset given")
    sets = [load_labelled(r) for r in roots]
    names = [s.root.resolve().name for s in sets]
    if len(set(names)) != len(names):
        raise InputError(f"two datasets share a folder name ({', '.join(sorted(names))}); rename one")
    if len(sets) == 1:
        ds = sets[0]
        return LabelledSet(ds.root, ds.layout, [replace(i, source=i.source or names[0]) for i in ds.items])
    items = [replace(i, relpath=f"{name}/{i.relpath}", source=i.source or name)
             for name, ds in zip(names, sets) for i in ds.items]
    return LabelledSet(Path(os.path.commonpath([str(s.root.resolve()) for s in sets])), "pool", items)
