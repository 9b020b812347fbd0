"""Seeded generators of archives, hostile ones included (RELIABILITY.md §1c #32-35)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import genimages as gen


def jpeg(seed: int) -> bytes:
    return gen.encode(gen.photo_like(260, 240, seed), "JPEG")


def _info(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = linkname
    info.mode = 0o644
    return info


def tar_with(path: Path, members: list[tuple[str, bytes, bytes, str]], mode: str = "w") -> Path:
    """members: (name, data, type, linkname)."""
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as tf:
        for name, data, kind, link in members:
            tf.addfile(_info(name, data, kind, link), io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


def zip_with(path: Path, members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def hostile_tar(path: Path) -> Path:
    """Traversal and absolute names (real images inside), links and special members."""
    return tar_with(path, [
        ("ok.jpg", jpeg(1), tarfile.REGTYPE, ""),
        ("../../escape.jpg", jpeg(2), tarfile.REGTYPE, ""),
        ("/abs/path.jpg", jpeg(3), tarfile.REGTYPE, ""),
        ("a/../../b.jpg", jpeg(4), tarfile.REGTYPE, ""),
        ("C:\\windows\\w.jpg", jpeg(5), tarfile.REGTYPE, ""),
        ("passwd.jpg", b"", tarfile.SYMTYPE, "/etc/passwd"),
        ("hard.jpg", b"", tarfile.LNKTYPE, "ok.jpg"),
        ("fifo.jpg", b"", tarfile.FIFOTYPE, ""),
        ("tty.jpg", b"", tarfile.CHRTYPE, ""),
        ("dir/", b"", tarfile.DIRTYPE, ""),
        ("ok.jpg", jpeg(6), tarfile.REGTYPE, ""),  # the same name again, other content
    ])


def ratio_bomb_zip(path: Path, size: int = 200 * 2**20) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("zeros.jpg", "w", force_zip64=True) as fh:
            chunk = b"\x00" * 2**20
            for _ in range(size // len(chunk)):
                fh.write(chunk)
    return path


def encrypted_zip(path: Path) -> Path:
    """A zip whose member carries the 'encrypted' flag (bit 0) in both headers."""
    data = bytearray(zip_with(path, [("secret.jpg", jpeg(7))], zipfile.ZIP_STORED).read_bytes())
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    data[local + 6] |= 1
    data[central + 8] |= 1
    path.write_bytes(bytes(data))
    return path


def nested_zip(path: Path) -> Path:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("deep.jpg", jpeg(8))
    return zip_with(path, [("inner.zip", inner.getvalue()), ("top.jpg", jpeg(9))])


def chopped(path: Path, src: Path, cut: int = 100) -> Path:
    data = src.read_bytes()
    path.write_bytes(data[: len(data) - cut])
    return path


def webdataset_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]], mode: str = "w") -> Path:
    """A WebDataset shard: each sample ``(key, {extension: data})`` as adjacent members ``key.extension``, in the
    order given."""
    return tar_with(path, [(f"{key}.{ext}", data, tarfile.REGTYPE, "") for key, parts in samples
                           for ext, data in parts.items()], mode)


def five_samples() -> list[tuple[str, dict[str, bytes]]]:
    """Five samples as WebDataset writers make them: jpg + json + txt, png + cls, and one with only a json."""
    import json

    png = gen.encode(gen.photo_like(250, 240, 31), "PNG")
    return [
        ("train/0001", {"jpg": jpeg(30), "json": json.dumps({"caption": "a red barn", "width": 260}).encode(),
                        "txt": "a red barn\n".encode()}),
        ("train/0002", {"png": png, "cls": b"3"}),
        ("train/0003", {"json": b'{"note": "the image was removed", "tags": ["x", "y"]}'}),
        ("train/0004", {"jpg": jpeg(32), "json": b'{"caption": "caf\\u00e9", "score": 0.5}', "txt": "café".encode()}),
        ("train/0005", {"png": gen.encode(gen.photo_like(240, 250, 33), "PNG"), "cls": b"0\n"}),
    ]
