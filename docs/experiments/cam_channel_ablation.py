"""How much does the G-CAGE head rely on the heatmap channel? Scores the faces test split with the bundled model,
feeding the head (a) the real CAM, (b) an all-zero fourth channel, (c) the CAM of another image of the split
(shuffled with a fixed seed). Prints a markdown table (AP, real/fake accuracy at the model's threshold).

    .venv/bin/python docs/experiments/cam_channel_ablation.py [../shared/data/faces]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from gcage_fast.config import Limits
from gcage_fast.evaluation.datasets import load_labelled
from gcage_fast.ingest.decode import decode_rgb
from gcage_fast.export.graphs import base_graph, head_graph
from gcage_fast.kernels.cpu import fuse_cam_from_patches
from gcage_fast.kernels.reference import gather_patches
from gcage_fast.evaluation.metrics import average_precision, threshold_metrics
from gcage_fast.models.registry import load_model
from gcage_fast.scoring.patches import pad_to_patch, select


def main(data: str) -> None:
    model = load_model(None)
    spec = model.spec
    base = base_graph(model, spec.cam.method, spec.cam.target, spec.cam.layer)
    head = head_graph(model)
    items = load_labelled(data).split("test").items
    patches, cams, owner, labels = [], [], [], []
    for n, item in enumerate(items):
        rgb, _ = pad_to_patch(decode_rgb(item.path.read_bytes(), Limits()).rgb)
        sel = select(rgb, spec.top_k)
        boxes = np.array([[0, x, y] for x, y in sel.boxes])
        x = gather_patches([rgb], boxes)
        with torch.no_grad():
            _, cam = base(torch.from_numpy(x))
        patches.append(x)
        cams.append(cam.numpy())
        owner += [n] * len(x)
        labels.append(item.label)
    x = np.concatenate(patches)
    cam = np.concatenate(cams)
    owner = np.array(owner)
    y = np.array(labels)
    rng = np.random.default_rng(0)
    variants = {
        "real CAM (what the scan does)": fuse_cam_from_patches(x, cam),
        "zero fourth channel": np.concatenate([x, np.zeros_like(x[:, :1])], axis=1),
        "CAM of another test image": fuse_cam_from_patches(x, cam[rng.permutation(len(cam))]),
    }
    print(f"faces test split: {int((y == 0).sum())} real, {int(y.sum())} fake; model {spec.model_id}, "
          f"threshold {spec.threshold:.3f}\n")
    print("| head input | AP | acc_real | acc_fake |")
    print("|---|---|---|---|")
    for name, inp in variants.items():
        with torch.no_grad():
            p = head(torch.from_numpy(inp)).numpy()
        s = np.array([p[owner == i].mean() for i in range(len(items))])
        m = threshold_metrics(y, s, spec.threshold)
        print(f"| {name} | {average_precision(y, s):.4f} | {m['acc_real']:.4f} | {m['acc_fake']:.4f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[3] / "shared/data/faces"))
