"""WebDataset shards as inputs (``scan --input-format webdataset``): one input per sample, not per member.

A WebDataset shard is a tar (any archive is read this way in this mode) whose members are grouped into samples by
their key: the member name up to the first dot of its base name (``dir/0001.jpg`` and ``dir/0001.meta.json``
belong to sample ``dir/0001``; the rest of the name, ``jpg`` and ``meta.json``, is the member's extension). As
WebDataset itself reads a shard, a sample is a run of adjacent members with the same key; a key that comes back
later starts another sample.

A sample's image is the member whose extension ends in an image extension, in the order of
:data:`IMAGE_EXTENSIONS` (``jpg`` before ``png`` and so on; among members of one extension, the first in the
shard). It is what gets decoded and scored, and it names the input (``member``, ``member_index``, so the
locator is ``shard.tar!dir/0001.jpg``). Further images of the sample are not scored: the row is flagged
``webdataset.images_unscanned``. A sample without an image gets one ``error`` row, ``webdataset.no_image``, whose
``member`` is the sample key.

Every other member is a sidecar: the scan reads it (in memory, at most :data:`SIDECAR_MAX_BYTES`) and the row's
``sidecar`` column holds all of them as one JSON object keyed by extension: ``json`` members parsed, the rest as
text. A sidecar over the size limit or not UTF-8 text is ``null`` there, and the row flagged
``webdataset.sidecar_too_large`` or ``webdataset.sidecar_binary``; a ``json`` member that does not parse is kept
as text and flagged ``webdataset.sidecar_invalid_json``. Sidecars never get rows of their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from gcage_fast.ingest.archives import ArchiveMember
from gcage_fast.text import printable

__all__ = ["IMAGE_EXTENSIONS", "NO_IMAGE", "SIDECAR_MAX_BYTES", "Sample", "sample_key", "samples", "sidecar_json"]

#: Extensions of a sample's image, in the order one is chosen when a sample has several.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "tif", "tiff")
#: The error_code of a sample without an image member.
NO_IMAGE = "webdataset.no_image"
#: Bytes a sidecar may have to be kept in the ``sidecar`` column.
SIDECAR_MAX_BYTES = 64 * 1024


def sample_key(name: bytes) -> tuple[bytes, bytes]:
    """``(key, extension)`` of a member name: ``b"dir/0001.meta.json"`` -> ``(b"dir/0001", b"meta.json")``."""
    folder, slash, base = name.rpartition(b"/")
    stem, _, ext = base.partition(b".")
    return folder + slash + stem, ext


def _image_rank(ext: bytes) -> int | None:
    """Position in :data:`IMAGE_EXTENSIONS` of the last part of ``ext`` (None: not an image)."""
    last = ext.rsplit(b".", 1)[-1].lower().decode("ascii", "replace")
    return IMAGE_EXTENSIONS.index(last) if ext and last in IMAGE_EXTENSIONS else None


@dataclass(frozen=True)
class Sample:
    """One sample as the plan has it: the member that names it (its image, or its key when it has none), the
    preset outcome (``webdataset.no_image``, or the image member's own), the row's flags and the sidecars to read,
    ``(index, name)``."""

    member: bytes
    member_index: int
    preset: tuple[str, str, str] | None
    flags: tuple[str, ...]
    sidecars: tuple[tuple[int, bytes], ...]


def _group(members: Iterable[ArchiveMember]) -> list[tuple[bytes, list[ArchiveMember]]]:
    """Runs of adjacent members with the same key, in shard order."""
    runs: list[tuple[bytes, list[ArchiveMember]]] = []
    for m in members:
        key = sample_key(m.name)[0]
        if runs and runs[-1][0] == key:
            runs[-1][1].append(m)
        else:
            runs.append((key, [m]))
    return runs


def _sample(key: bytes, members: list[ArchiveMember]) -> Sample:
    ranked = [(rank, n, m) for n, m in enumerate(members) if (rank := _image_rank(sample_key(m.name)[1])) is not None]
    flags = tuple(dict.fromkeys(f for m in members for f in m.flags))
    if len(ranked) > 1:
        flags += ("webdataset.images_unscanned",)
    images = {id(m) for _, _, m in ranked}
    sidecars = tuple((m.index, m.name) for m in members if id(m) not in images and m.preset is None)
    if not ranked:
        exts = ", ".join(printable(sample_key(m.name)[1].decode("utf-8", "backslashreplace")) or "(none)"
                         for m in members)
        detail = (f"sample {printable(key.decode('utf-8', 'backslashreplace'))} has no image member (one of "
                  f"{', '.join(IMAGE_EXTENSIONS)}); its members' extensions: {exts}")
        return Sample(key, members[0].index, ("error", NO_IMAGE, detail), flags, sidecars)
    image = min(ranked, key=lambda t: (t[0], t[1]))[2]
    return Sample(image.name, image.index, image.preset, flags, sidecars)


def samples(members: Iterable[ArchiveMember]) -> list[Sample]:
    """The samples of a listed shard (its regular members and links, filtered), in shard order."""
    return [_sample(key, run) for key, run in _group(members)]


def sidecar_json(parts: list[tuple[bytes, bytes | None]]) -> tuple[str, list[str]]:
    """The ``sidecar`` column of a sample and the flags it adds, from its sidecars as ``(name, content)`` in shard
    order (content None: over :data:`SIDECAR_MAX_BYTES`). The first member of an extension wins."""
    value: dict[str, object] = {}
    flags: list[str] = []

    def flag(name: str) -> None:
        if name not in flags:
            flags.append(name)

    for name, data in parts:
        ext = sample_key(name)[1].decode("utf-8", "backslashreplace")
        if ext in value:
            continue
        if data is None:
            value[ext] = None
            flag("webdataset.sidecar_too_large")
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            value[ext] = None
            flag("webdataset.sidecar_binary")
            continue
        if ext.rsplit(".", 1)[-1].lower() == "json":
            try:
                value[ext] = json.loads(text, parse_constant=_no_constant)
                continue
            except ValueError:
                flag("webdataset.sidecar_invalid_json")
        value[ext] = text
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \\uD800 escape: keep it escaped
        text = json.dumps(value)
    return text, flags


def _no_constant(name: str) -> object:
    """NaN and Infinity are not JSON: such a member is kept as text."""
    raise ValueError(f"{name} is not JSON")
