"""Output schema, version 5: one row per planned input. The only place columns are defined.

Version 2 added ``member_index``, ``flags``, ``trailing_bytes`` and ``exif_orientation`` to version 1; version 3
added the provenance columns ``evidence``, ``c2pa`` and ``verdict_source`` (``verdict`` became the fused verdict;
``p_fake`` stays the model's own score); version 4 added ``locator``, ``input_root``, ``relpath``,
``base_class_probs``, ``heatmap_path`` and ``known``, and moved the results from ``OUT/parts/`` to ``OUT/results/``
(the plan became Arrow IPC files, so ``OUT/**/*.parquet`` is the result set); version 5 added ``sidecar`` (the other
members of a WebDataset sample, ``scan --input-format webdataset``). :data:`ROW_SCHEMAS` keeps the columns of every
version, so verify and report still read older outputs.

A scan of a table (``scan --from-table``) appends the table's kept columns after these, with the table's own types
(:func:`with_kept`); its run.json lists them (``kept_columns``), and verify accepts exactly those.

Scores are null unless ``status = ok`` (fail closed: an unscanned file never looks clean).
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["SCHEMA_VERSION", "ROW_SCHEMA", "ROW_SCHEMAS", "ADDED", "PATCH_TYPE", "EVIDENCE_TYPE", "C2PA_TYPE", "PLAN_SCHEMA", "STATUSES",
           "SCORE_COLUMNS", "KNOWN_TYPE", "SIDECARS_TYPE", "OBJECT_INFO_TYPE", "kept_field", "with_kept", "plan_schema"]

SCHEMA_VERSION = 5
STATUSES = ("ok", "error", "skipped")
CAM_VALUES = 49  # 7×7 CAM per patch, min-max normalised and quantised to uint8

PATCH_TYPE = pa.struct([
    pa.field("x", pa.int32(), nullable=False),
    pa.field("y", pa.int32(), nullable=False),
    pa.field("contrast", pa.float64(), nullable=False),
    pa.field("p_fake", pa.float32(), nullable=False),
    pa.field("probs", pa.list_(pa.float32()), nullable=False),
    pa.field("cam", pa.list_(pa.uint8(), CAM_VALUES), nullable=False),
])

#: One provenance signal (gcage_fast.evidence.types.Evidence).
EVIDENCE_TYPE = pa.struct([
    pa.field("kind", pa.string(), nullable=False),  # c2pa | iptc | metadata | watermark
    pa.field("claim", pa.string(), nullable=False),  # ai_generated | ai_edited | capture | unknown
    pa.field("generator", pa.string()),
    pa.field("detail", pa.string(), nullable=False),
    pa.field("strength", pa.string(), nullable=False),  # signed | declared | detected
])

#: The file's C2PA manifest (gcage_fast.evidence.types.C2paInfo).
C2PA_TYPE = pa.struct([
    pa.field("present", pa.bool_(), nullable=False),
    pa.field("state", pa.string()),  # trusted | valid | invalid
    pa.field("failure_codes", pa.list_(pa.string())),
    pa.field("signer", pa.string()),
    pa.field("issuer", pa.string()),
    pa.field("claim_generator", pa.string()),
    pa.field("digital_source_types", pa.list_(pa.string())),
    pa.field("actions", pa.list_(pa.string())),
    pa.field("ingredients", pa.int32()),
    pa.field("signing_time", pa.string()),
])

#: Where an input's content was scored before (scan --skip-known): the old output and its row.
KNOWN_TYPE = pa.struct([
    pa.field("output", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("input_id", pa.string(), nullable=False),
    pa.field("locator", pa.string(), nullable=False),
])

_FIELDS = [
    ("input_id", pa.string(), False, "sha256 of the canonical locator (absolute path bytes + archive member)"),
    ("path", pa.string(), False, "display form of the path: undecodable bytes and control characters escaped"),
    ("path_bytes", pa.binary(), False, "the raw path bytes"),
    ("member", pa.string(), True, "archive member (display form), null for plain files"),
    ("member_bytes", pa.binary(), True, "raw archive member name"),
    ("member_index", pa.int32(), True, "position of the member in its archive"),
    ("locator", pa.string(), False, "where the input is, in one string: path, or path!member for archive members "
     "(display forms, escaped as path is)"),
    ("input_root", pa.string(), False, "the scanned directory the input was found under (display form); for a file "
     "named directly, its directory"),
    ("relpath", pa.string(), False, "the locator relative to input_root (path!member for archive members)"),
    ("sidecar", pa.string(), True, "scan --input-format webdataset: the sample's other members as one JSON object "
     "keyed by extension (json parsed, text as a string; null for one over 64 KiB or not UTF-8); null for inputs "
     "that are not WebDataset samples"),
    ("size_bytes", pa.int64(), True, "bytes read"),
    ("sha256", pa.string(), True, "sha256 of the file content"),
    ("format", pa.string(), True, "format detected from content (JPEG, PNG, ...)"),
    ("width", pa.int32(), True, "width in display orientation (EXIF applied), before padding"),
    ("height", pa.int32(), True, "height in display orientation, before padding"),
    ("mode", pa.string(), True, "the file's pixel mode before conversion to RGB"),
    ("n_frames", pa.int32(), True, "frames in the file"),
    ("frames_scanned", pa.int32(), True, "frames scanned (the first)"),
    ("status", pa.string(), False, "ok | error | skipped"),
    ("error_code", pa.string(), True, "stable dotted code, e.g. decode.truncated, limit.pixels"),
    ("error_detail", pa.string(), True, "human-readable detail (at most 512 characters)"),
    ("known", KNOWN_TYPE, True, "scan --skip-known: the earlier row that scored the same content (same sha256), "
     "for a row with status skipped and error_code known.sha256: output (its directory), run_id, input_id and "
     "locator of that row; null otherwise"),
    ("flags", pa.list_(pa.string()), True, "observations that do not stop the scan (archive.unsafe_name, "
     "exif.invalid, alpha.transparent, frames.unscanned, format.extension_mismatch, trailing.bytes, ...)"),
    ("trailing_bytes", pa.int64(), True, "bytes after the end of the image data (polyglots, appended payloads)"),
    ("exif_orientation", pa.int32(), True, "EXIF orientation applied to the pixels (1 = none)"),
    ("evidence", pa.list_(EVIDENCE_TYPE), True, "provenance signals: kind (c2pa | iptc | metadata | watermark), "
     "claim (ai_generated | ai_edited | capture | unknown), generator, detail, strength (signed | declared | "
     "detected); empty when none was found, null when the bytes could not be read, evidence was off or the "
     "content was known (--skip-known)"),
    ("c2pa", C2PA_TYPE, True, "the C2PA manifest: state (trusted | valid | invalid), failure codes, signer, issuer, "
     "claim generator, digitalSourceTypes, actions, ingredients, signing time; null without a manifest"),
    ("n_patches_total", pa.int32(), True, "patches in the grid (--grid floor or cover)"),
    ("n_patches_scanned", pa.int32(), True, "patches scored (top-k by contrast)"),
    ("padded", pa.bool_(), True, "true when a side < 224 was edge-padded"),
    ("p_fake", pa.float64(), True, "G-CAGE P(fake): mean of the head's per-patch P(fake)"),
    ("verdict", pa.string(), True, "fake | uncertain | real: the fused verdict (verdict_source says what decided "
     "it; with the model, fake when p_fake >= threshold, uncertain when the model has an uncertain band and "
     "uncertain_threshold <= p_fake < threshold, else real)"),
    ("verdict_source", pa.string(), True, "model | c2pa | watermark | metadata: what made the verdict "
     "(--verdict-policy)"),
    ("threshold", pa.float64(), True, "threshold used for the verdict"),
    ("base_p_fake", pa.float64(), True, "base detector: 1 - mean P(authentic) over patches"),
    ("base_probs", pa.list_(pa.float64()), True, "base detector: mean class probabilities over patches, in the "
     "model's class order (base_class_probs has them by name)"),
    ("base_class_probs", pa.map_(pa.string(), pa.float64()), True, "base detector: mean probability per class "
     "name, e.g. base_class_probs['authentic']"),
    ("attribution", pa.string(), True, "base detector: most likely class of the mean probabilities"),
    ("patches", pa.list_(PATCH_TYPE), True, "per patch: x, y, contrast, p_fake, probs, cam (49 uint8)"),
    ("heatmap_path", pa.string(), True, "the heatmap overlay of this row relative to the output directory "
     "(heatmaps/xx/<input_id>.<ext>); null when none was written"),
    ("model_id", pa.string(), False, "model name@version"),
    ("model_sha256", pa.string(), False, "sha256 of the model spec (covers the weights)"),
    ("backend", pa.string(), False, "what ran, e.g. ort:CPUExecutionProvider or torch:cpu"),
    ("cam_method", pa.string(), False, "CAM method of the heatmaps"),
    ("cam_target", pa.string(), False, "what the CAM explains (fake, pred, class:NAME, ...)"),
    ("run_id", pa.string(), False, "identifier of the scan (kept across --resume)"),
    ("shard", pa.int32(), False, "shard number"),
    ("scanned_at", pa.timestamp("us", tz="UTC"), False, "when the row was produced"),
]

#: Columns that are null unless status = ok.
SCORE_COLUMNS = ("p_fake", "verdict", "verdict_source", "threshold", "base_p_fake", "base_probs", "base_class_probs",
                 "attribution", "patches", "n_patches_scanned", "heatmap_path")

ROW_SCHEMA = pa.schema(
    [pa.field(name, typ, nullable=nullable, metadata={"description": doc}) for name, typ, nullable, doc in _FIELDS],
    metadata={"gcage_fast.schema_version": str(SCHEMA_VERSION)},
)

#: The columns each schema version added (what an older output lacks).
ADDED = {5: ("sidecar",),
         4: ("locator", "input_root", "relpath", "base_class_probs", "heatmap_path", "known"),
         3: ("evidence", "c2pa", "verdict_source")}


def _row_schema(version: int) -> pa.Schema:
    """The row schema of an older version: this one without the columns added since."""
    gone = {name for v, names in ADDED.items() if v > version for name in names}
    return pa.schema([f for f in ROW_SCHEMA if f.name not in gone],
                     metadata={"gcage_fast.schema_version": str(version)})


#: Row schema per version that verify and report accept (2 to 4: outputs of earlier releases).
ROW_SCHEMAS = {v: _row_schema(v) for v in (2, 3, 4, SCHEMA_VERSION)}


def kept_field(name: str, typ: pa.DataType) -> pa.Field:
    """A column kept from a ``--from-table`` table: its own name and type, nullable."""
    return pa.field(name, typ, nullable=True, metadata={"description": "kept from the table (scan --keep-columns)"})


def with_kept(kept: tuple[pa.Field, ...] | list[pa.Field] = ()) -> pa.Schema:
    """The row schema of a scan, with the table columns it keeps appended (:func:`kept_field`)."""
    return ROW_SCHEMA if not kept else pa.schema([*ROW_SCHEMA, *kept], metadata=ROW_SCHEMA.metadata)


#: A WebDataset sample's members besides its image, as the plan lists them (read and turned into the ``sidecar``
#: column at scan time): position in the archive and raw name.
SIDECARS_TYPE = pa.list_(pa.struct([pa.field("index", pa.int32(), nullable=False),
                                    pa.field("name", pa.binary(), nullable=False)]))

#: What the plan records of an input that is an object in an object store (gcage_fast.ingest.objectstore), so a
#: scan can tell it is still the object planned (else ``fs.changed``): size, and ETag, version id and Last-Modified
#: as the store gave them when the object was opened (null where it gives none).
OBJECT_INFO_TYPE = pa.struct([pa.field("size", pa.int64(), nullable=False), pa.field("etag", pa.string()),
                              pa.field("version", pa.string()), pa.field("last_modified", pa.string())])

PLAN_SCHEMA = pa.schema([
    pa.field("index", pa.int64(), nullable=False),
    pa.field("input_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("path_bytes", pa.binary(), nullable=False),
    pa.field("member_bytes", pa.binary()),
    pa.field("member_index", pa.int32()),
    pa.field("flags", pa.list_(pa.string())),
    pa.field("preset_status", pa.string()),
    pa.field("preset_code", pa.string()),
    pa.field("preset_detail", pa.string()),
    pa.field("sidecars", SIDECARS_TYPE),  # WebDataset samples only
    pa.field("object_info", OBJECT_INFO_TYPE),  # objects in object stores only (s3://...)
], metadata={"gcage_fast.schema_version": str(SCHEMA_VERSION)})


def plan_schema(kept: tuple[pa.Field, ...] | list[pa.Field] = ()) -> pa.Schema:
    """The schema of a plan shard: :data:`PLAN_SCHEMA`, and for a scan of a table the values of its kept columns
    as one struct column ``carried`` with their own types (a resume reproduces them exactly)."""
    if not kept:
        return PLAN_SCHEMA
    return PLAN_SCHEMA.append(pa.field("carried", pa.struct(list(kept))))
