"""Per-file CPU work before the engine: read, hash, decode, pad, patch selection. Runs in decode workers.

:func:`prepare` never raises for a problem of the file: it returns a :class:`Prepared` whose ``status`` says what
happened. NumPy and Pillow only.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from gcage_fast.config import Limits
from gcage_fast.env import test_hooks
from gcage_fast.evidence.collect import EvidenceOptions, Found, read_evidence, read_pixel_evidence
from gcage_fast.evidence.types import C2paInfo, Evidence
from gcage_fast.ingest.archives import is_archive_bytes
from gcage_fast.ingest.decode import DecodeFailure, decode_rgb, sniff_format
from gcage_fast.ingest.known import KNOWN_CODE, KnownRef, known_detail, lookup
from gcage_fast.scoring.patches import PATCH, grid_shape, pad_to_patch, select
from gcage_fast.ingest.perturb import Perturbation, apply_perturbation
from gcage_fast.text import printable

if TYPE_CHECKING:
    from gcage_fast.ingest.workers import WorkerFailure

__all__ = ["PrepareTask", "Prepared", "prepare", "read_file"]

_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class PrepareTask:
    """What a worker needs for one input (picklable)."""

    index: int
    path_bytes: bytes
    top_k: int
    small_images: str = "pad"
    limits: Limits = Limits()
    preview_max: int = 0  # longest side of the preview kept for heatmap overlays; 0 = none
    perturb: Perturbation | None = None  # robustness transform applied after decoding (evaluation only)
    data: bytes | None = None  # the content, when the parent read it (archive members, objects); else read path_bytes
    name: bytes = b""  # file or member name, for the extension check (never used as a path)
    full_image: bool = False  # keep the padded image for device-side patch selection instead of selecting here
    evidence: EvidenceOptions | None = None  # provenance readers to run on the bytes (None: none)
    grid: str = "floor"  # patch grid (gcage_fast.scoring.patches.GRIDS)
    known: KnownRef | None = None  # scan --skip-known: the frozen set of content scored before (None: none)
    in_archive: bool = True  # ``data`` is an archive member (an archive in it is not opened); False: a whole object


@dataclass
class Prepared:
    """The outcome of :func:`prepare` for one input. ``patches`` is set only when ``status == "ok"``."""

    index: int
    status: str = "ok"
    error_code: str | None = None
    error_detail: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    n_frames: int | None = None
    frames_scanned: int | None = None
    padded: bool | None = None
    n_patches_total: int | None = None
    patches: np.ndarray | None = None  # (k, P, P, 3) uint8
    image: np.ndarray | None = None  # (H, W, 3) uint8, padded: only for device-side selection (full_image)
    boxes: np.ndarray | None = None  # (k, 2) int32 (x, y) in the (padded) display image
    contrast: np.ndarray | None = None  # (k,) float64
    preview: np.ndarray | None = None  # (h, w, 3) uint8, the display image scaled by preview_scale
    preview_scale: float = 1.0
    flags: list[str] = field(default_factory=list)
    trailing_bytes: int | None = None
    exif_orientation: int | None = None
    top_k: int = 0  # with ``image``: how many patches the device selects
    evidence: list[Evidence] = field(default_factory=list)  # provenance signals (gcage_fast.evidence)
    c2pa: C2paInfo | None = None  # the C2PA manifest, when the file has one
    known: dict[str, str] | None = None  # the earlier row that scored this content (--skip-known): the row's pointer

    def fail(self, code: str, detail: str, status: str = "error") -> Prepared:
        self.status, self.error_code, self.error_detail = status, code, printable(detail)[:512]
        self.patches = self.image = self.boxes = self.contrast = self.preview = None
        return self

    @property
    def n_patches(self) -> int:
        """Patches this input sends to the engine (selected here, or to be selected on the device)."""
        if self.patches is not None:
            return len(self.patches)
        return min(self.top_k, self.n_patches_total or 0) if self.image is not None else 0


_FS_ERRNO = {
    errno.ENOENT: "fs.vanished",
    errno.EACCES: "fs.permission",
    errno.EPERM: "fs.permission",
    errno.ELOOP: "fs.symlink_loop",
    errno.ENAMETOOLONG: "fs.name_too_long",
    errno.ENOTDIR: "fs.vanished",
}


def read_file(path: bytes, max_bytes: int) -> bytes:
    """Read a regular file completely, refusing anything else and anything over ``max_bytes``.

    Opened non-blocking so a FIFO that replaced a planned file can never hang the worker.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DecodeFailure(_FS_ERRNO.get(exc.errno or 0, "fs.io_error"), exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DecodeFailure("fs.not_regular", "not a regular file", status="skipped")
        if st.st_size > max_bytes:
            raise DecodeFailure("limit.bytes", f"{st.st_size} bytes is over the limit of {max_bytes}")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise DecodeFailure("limit.bytes", f"file grew past the limit of {max_bytes} bytes while read")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise DecodeFailure(_FS_ERRNO.get(exc.errno or 0, "fs.io_error"), exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def _preview(rgb: np.ndarray, longest: int) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    scale = min(1.0, longest / max(h, w))
    if scale >= 1.0:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)), scale


_HOOKS = test_hooks()


def _test_hook(data: bytes) -> None:
    """GCAGE_TEST_HOOKS=1 only: misbehave on magic content so tests can drive the supervision paths."""
    if data.startswith(b"GCAGE-TEST-ABORT"):
        os.abort()
    if data.startswith(b"GCAGE-TEST-SEGV"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if data.startswith(b"GCAGE-TEST-HANG"):
        time.sleep(3600)
    if data.startswith(b"GCAGE-TEST-ALLOC"):
        # One allocation of the worker's whole address-space limit (it already uses some, so it cannot fit): the
        # MemoryError comes at once, however loaded the machine. Filling memory gradually raced the timeout.
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        np.empty(limit if limit != resource.RLIM_INFINITY else 2**62, dtype=np.uint8)
        raise AssertionError("GCAGE-TEST-ALLOC: an allocation of the whole memory limit succeeded")


_EXTENSIONS = {b"jpg": "JPEG", b"jpeg": "JPEG", b"jpe": "JPEG", b"jfif": "JPEG", b"png": "PNG", b"webp": "WEBP",
               b"gif": "GIF", b"bmp": "BMP", b"tif": "TIFF", b"tiff": "TIFF"}


def _extension_mismatch(name: bytes, fmt: str) -> bool:
    """True when the name has a known image extension that disagrees with the content (never used to decide)."""
    ext = name.rsplit(b".", 1)[-1].lower() if b"." in name.rsplit(b"/", 1)[-1] else b""
    return ext in _EXTENSIONS and _EXTENSIONS[ext] != fmt


def prepare_failure(task: PrepareTask, failure: WorkerFailure) -> Prepared:
    """The row of a file whose worker failed (crash, timeout, memory): the pool's ``on_failure`` for
    :func:`prepare`."""
    return Prepared(index=task.index).fail(failure.code, failure.detail)


def _read_evidence(out: Prepared, data: bytes, options: EvidenceOptions | None) -> Found | None:
    """Run the byte-level evidence readers (before decoding, so a file that does not decode keeps its provenance)."""
    if options is None:
        return None
    found = read_evidence(data, sniff_format(data), options)
    out.evidence, out.c2pa = found.evidence, found.c2pa
    out.flags.extend(found.flags)
    return found


def prepare(task: PrepareTask) -> Prepared:
    """Read, decode and select patches for one input."""
    out = Prepared(index=task.index)
    if task.data is not None:
        data = task.data
    else:
        try:
            data = read_file(task.path_bytes, task.limits.max_bytes)
        except DecodeFailure as f:
            return out.fail(f.code, f.detail, f.status)
    if _HOOKS:
        _test_hook(data)
    out.size_bytes = len(data)
    out.sha256 = hashlib.sha256(data).hexdigest()
    if task.known is not None:  # before any decoding: content scored before costs no more than its hash
        out.known = lookup(task.known, out.sha256)
        if out.known is not None:
            return out.fail(KNOWN_CODE, known_detail(out.known), status="skipped")
    if task.data is not None and task.in_archive and is_archive_bytes(data[:512]):
        return out.fail("archive.nested", "an archive inside an archive is not opened", status="skipped")
    found = _read_evidence(out, data, task.evidence)
    try:
        img = decode_rgb(data, task.limits)
    except DecodeFailure as f:
        sniffed = sniff_format(data)
        if sniffed:
            out.format = sniffed
        return out.fail(f.code, f.detail, f.status)
    del data
    out.format, out.mode, out.n_frames = img.format, img.mode, img.n_frames
    out.flags, out.trailing_bytes, out.exif_orientation = img.flags + out.flags, img.trailing_bytes, img.orientation
    if _extension_mismatch(task.name, img.format):
        out.flags.append("format.extension_mismatch")
    if task.perturb is not None:
        img.rgb = apply_perturbation(img.rgb, task.perturb, seed=int(out.sha256[:8], 16))
    if found is not None and task.evidence is not None and task.evidence.watermarks:
        # after the perturbation: ``eval --perturb`` measures how well the watermark survives it
        read_pixel_evidence(img.rgb, task.evidence, found)
        out.evidence = found.evidence
        out.flags.extend(f for f in found.flags if f not in out.flags)
    out.height, out.width = img.rgb.shape[:2]
    if task.preview_max:
        out.preview, out.preview_scale = _preview(img.rgb, task.preview_max)
    if min(out.height, out.width) < PATCH and task.small_images == "skip":
        return out.fail("limit.too_small", f"{out.width}x{out.height} is smaller than one {PATCH}x{PATCH} patch "
                        "(--small-images skip)", status="skipped")
    rgb, out.padded = pad_to_patch(img.rgb)
    if task.full_image:  # the scan selects the patches on its device (gcage_fast.scoring.device)
        num_x, num_y = grid_shape(rgb.shape[0], rgb.shape[1], grid=task.grid)
        out.n_patches_total, out.top_k, out.image = num_x * num_y, task.top_k, np.ascontiguousarray(rgb)
        out.frames_scanned = 1
        return out
    sel = select(rgb, task.top_k, grid=task.grid)
    out.n_patches_total = sel.n_total
    out.boxes, out.contrast = sel.boxes, sel.contrast
    out.patches = np.stack([rgb[y:y + PATCH, x:x + PATCH] for x, y in sel.boxes])
    out.frames_scanned = 1
    return out
