"""Reduced-precision graphs: fp16 (mixed, strongly typed) and int8 (static Q/DQ from a calibration pass).

- ``fp16``: the convolutional trunks of the base detector and of the head run in float16; the pooled MLP, the
  softmax, the CAM (its weights come from the MLP's closed-form gradient and are sensitive to rounding) and the
  head's sigmoid stay in float32. The graph's inputs and outputs stay float32, so every runner feeds it the
  same arrays. The cast points are part of the graph itself (a strongly typed graph), which is what TensorRT 11
  builds from; no builder precision flag is involved.
- ``int8``: ONNX Runtime's static quantisation tool rewrites the float32 graph with QuantizeLinear /
  DequantizeLinear pairs around the convolutions (weights int8 per output channel, activations uint8 with
  ranges from a calibration pass over real image patches). Two kinds of convolution stay float32 because
  quantising them moved the bundled model's P(fake) by up to 0.99 on held-out faces (docs/PRECISION.md):
  depthwise convolutions (one filter per channel: per-channel activation ranges differ by orders of magnitude
  and share one uint8 scale) and the first convolution, which reads the pixels. With them in float32 the
  largest change was 0.011. The MLP, the CAM and the softmax stay float32 for the same reason as in fp16.
  Two flavours, chosen by where the graph runs (``int8_target``): ``cpu`` quantises activations to uint8 with
  a zero point (the u8s8 form ONNX Runtime's x86 kernels are fastest with), ``tensorrt`` to symmetric int8
  (TensorRT's ONNX parser accepts only int8 zero points equal to 0; biases stay float32, TensorRT fuses them).

The calibration patches are chosen exactly as a scan chooses them (decode, pad, top-k by contrast), from a
directory of real images: the bundled sample images by default. The head is calibrated on its real input, the
patches with the float32 base graph's CAM as the fourth channel.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gcage_fast.cam.analytic import BaseWithCAM
from gcage_fast.errors import ConfigError, ExportError
from gcage_fast.log import logger
from gcage_fast.optional import require

__all__ = [
    "DEFAULT_CALIBRATION",
    "CALIBRATION_MAX_IMAGES",
    "Calibration",
    "HalfBase",
    "HalfHead",
    "calibration_files",
    "calibration_fingerprint",
    "load_calibration",
    "quantize_int8",
    "float_convs",
    "INT8_TARGETS",
]

#: The bundled sample images, seen from a checkout (export/ beside gcage_fast/); an installed package has them at
#: gcage_fast/samples/images, next to gcage_fast/export/.
DEFAULT_CALIBRATION = Path(__file__).resolve().parent.parent / "gcage_fast" / "samples" / "images"
CALIBRATION_MAX_IMAGES = 64
#: Where an int8 graph runs: ``cpu`` (ONNX Runtime, uint8 activations) or ``tensorrt`` (symmetric int8).
INT8_TARGETS = ("cpu", "tensorrt")
#: Op types rewritten with Q/DQ pairs in the int8 graphs (everything else stays float32).
INT8_OP_TYPES = ("Conv",)


def _default_calibration() -> Path:
    if DEFAULT_CALIBRATION.is_dir():
        return DEFAULT_CALIBRATION
    return Path(__file__).resolve().parent.parent / "samples" / "images"  # installed: gcage_fast/export/..


class HalfBase(nn.Module):
    """The base graph with its convolutional features computed in float16 and everything after them (pooled MLP,
    softmax, CAM) in float32. Float32 in, float32 out."""

    def __init__(self, graph: BaseWithCAM) -> None:
        super().__init__()
        mlp_only = nn.Module()  # the float32 part holds the MLP alone (no unused float32 trunk)
        mlp_only.mlp = graph.base.mlp
        self.tail = BaseWithCAM(mlp_only, graph.method, graph.target, graph.layer, graph.with_activations)
        self.features = copy.deepcopy(graph.base.feature_extractor).half().eval()

    def forward(self, x: torch.Tensor):
        s4, fmap = self.features.features(x.half())
        return self.tail.from_features(s4.float(), fmap.float())


class HalfHead(nn.Module):
    """The head graph (``sigmoid(head(x))``) with the head's convolutions and linear layer in float16 and the
    sigmoid in float32. Float32 in, float32 out."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.head = copy.deepcopy(graph.head).half().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(x.half()).float())


# ----------------------------------------------------------------------------------------------- calibration

@dataclass(frozen=True)
class Calibration:
    """Calibration patches and where they came from."""

    patches: np.ndarray  # (N, 3, P, P) float32 in [0, 1]
    files: tuple[str, ...]  # names relative to the calibration directory, in order
    fingerprint: str  # sha256 over (name, content sha256) of the files used
    source: str


def calibration_files(directory: str | Path | None, max_images: int = CALIBRATION_MAX_IMAGES) -> list[Path]:
    """Regular files under ``directory`` (sorted by relative path), evenly thinned to at most ``max_images``."""
    root = Path(directory) if directory is not None else _default_calibration()
    if not root.is_dir():
        raise ConfigError(f"calibration directory {root} does not exist or is not a directory")
    files = sorted((p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                    and not p.name.startswith(".") and p.suffix.lower() not in (".md", ".txt", ".json", ".csv")),
                   key=lambda p: p.relative_to(root).as_posix())
    if len(files) > max_images:
        idx = np.linspace(0, len(files) - 1, max_images).round().astype(int)
        files = [files[i] for i in sorted(set(idx.tolist()))]
    return files


def _fingerprint(root: Path, contents: list[tuple[Path, bytes]]) -> str:
    h = hashlib.sha256()
    for p, data in contents:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def calibration_fingerprint(directory: str | Path | None, max_images: int = CALIBRATION_MAX_IMAGES) -> str:
    """sha256 over the names and contents of the files :func:`load_calibration` would read (a cache key part)."""
    root = Path(directory) if directory is not None else _default_calibration()
    return _fingerprint(root, [(p, p.read_bytes()) for p in calibration_files(root, max_images)])


def load_calibration(directory: str | Path | None, top_k: int, max_images: int = CALIBRATION_MAX_IMAGES) -> Calibration:
    """Decode the calibration images and select their top-k patches exactly as a scan does.

    Raises:
        ConfigError: the directory is missing or holds no decodable image.
    """
    from gcage_fast.config import Limits
    from gcage_fast.ingest.decode import DecodeFailure, decode_rgb
    from gcage_fast.kernels.reference import gather_patches
    from gcage_fast.scoring.patches import PATCH, pad_to_patch, select

    root = Path(directory) if directory is not None else _default_calibration()
    contents = [(p, p.read_bytes()) for p in calibration_files(root, max_images)]
    images, boxes, used = [], [], []
    limits = Limits()
    for p, data in contents:
        try:
            rgb = decode_rgb(data, limits).rgb
        except DecodeFailure as f:
            logger.info("calibration: skipping %s (%s)", p.name, f.code)
            continue
        rgb, _ = pad_to_patch(rgb)
        sel = select(rgb, top_k)
        for x, y in sel.boxes:
            boxes.append((len(images), int(x), int(y)))
        images.append(rgb)
        used.append(p.relative_to(root).as_posix())
    if not images:
        raise ConfigError(f"no decodable image in calibration directory {root}")
    patches = gather_patches(images, np.asarray(boxes, dtype=np.int64), PATCH)
    return Calibration(patches, tuple(used), _fingerprint(root, contents), str(root))


# ----------------------------------------------------------------------------------------------- int8

def float_convs(path: Path) -> list[str]:
    """Names of the convolutions an int8 graph keeps in float32: the first one (it reads the pixels) and every
    grouped (depthwise) one."""
    import onnx

    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    keep = [n.name for i, n in enumerate(convs)
            if i == 0 or any(a.name == "group" and a.i > 1 for a in n.attribute)]
    return keep


class _Batches:
    """ONNX Runtime CalibrationDataReader over fixed batches of one input."""

    def __init__(self, name: str, data: np.ndarray, batch: int = 8) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(
            [{name: np.ascontiguousarray(data[i:i + batch])} for i in range(0, len(data), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_int8(src: Path, dst: Path, input_name: str, calibration: np.ndarray, symmetric: bool = False) -> None:
    """Write ``dst``: the float32 graph ``src`` with Q/DQ pairs around its convolutions (not the first one, not
    the depthwise ones), activation ranges calibrated (min-max) on ``calibration`` (the graph's real input).
    ``symmetric``: int8 activations with zero point 0 (TensorRT) instead of uint8 with a zero point (CPU)."""
    require("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = type("_Reader", (_Batches, CalibrationDataReader), {})(input_name, calibration)
    pre = dst.with_name(dst.name + ".pre.onnx")
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # the tool logs advice through the root logger
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=list(INT8_OP_TYPES),
                        nodes_to_exclude=float_convs(pre),
                        extra_options=({"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
                                       if symmetric else {}))
    except Exception as exc:  # noqa: BLE001 - the tool raises many types; all mean "quantisation failed"
        raise ExportError(f"int8 quantisation of {src.name} failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    finally:
        root_logger.setLevel(level)
        pre.unlink(missing_ok=True)
        for extra in dst.parent.glob(dst.name + ".pre*"):
            extra.unlink(missing_ok=True)
