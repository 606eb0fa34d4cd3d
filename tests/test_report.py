"""Tests for seglens.report: exact text, exact plot data, escaping, self-contained HTML, files written."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from seglens import report
from seglens.report import (
    plot_boundary,
    plot_confusion,
    plot_per_class_iou,
    plot_size,
    render_html,
    render_markdown,
    summary_line,
    write_report,
)

HOSTILE = '<b>&"dog$x$'  # HTML specials, and a $...$ pair that matplotlib would read as mathtext
SOURCE = "torchvision weights meta, COCO-val2017-VOC-labels"
WORST_FILES = ("worst/01_2008_000123.png", "worst/02_odd name.png")
PLOT_FILES = ("plots/confusion.png", "plots/per_class_iou.png", "plots/size.png", "plots/boundary.png")


def make_metrics() -> dict:
    """Three scored classes and one absent one, numbers worked out from the confusion matrix.

    cm (rows gt, cols pred)   background  cat  dog  cow | gt     row-normalised (%)
      background                    8000 1200  800    0 | 10000   80 12  8  0
      cat                            150  800   50    0 |  1000   15 80  5  0
      dog (HOSTILE)                  100  300 1600    0 |  2000    5 15 80  0
      cow                              0    0    0    0 |     0   blank (absent)
      pred                          8250 2300 2450    0
    IoU = tp / (gt + pred - tp): background 8000/10250 = 78.05, cat 800/2500 = 32.0, dog 1600/2850 = 56.14
    mIoU = 55.40 (cow left out); pixel acc = 10400/13000 = 80.0
    """
    return {
        "seglens_version": "0.1.0",
        "model": "deeplabv3_resnet50",
        "weights": "official",
        "weights_sha256": "cd0a2569" + "0" * 56,
        "device": "cpu",
        "dataset": {"kind": "coco-voc", "root": "/data/coco", "split": "val", "images": 2},
        "protocol": "torchvision",
        "tta": None,
        "miou": 55.3964,
        "pixel_acc": 80.0,
        "mean_acc": 80.0,
        "fwiou": 71.1829,
        "mean_dice": 69.3554,
        "published": {"miou": 66.4, "pixel_acc": 92.4, "source": SOURCE},
        "absent_rule": "A class absent from both ground truth and predictions is reported as absent.",
        "class_names": ["background", "cat", HOSTILE, "cow"],
        "per_class": {
            "background": {
                "index": 0,
                "iou": 78.0488,
                "acc": 80.0,
                "dice": 87.6712,
                "gt_pixels": 10000,
                "pred_pixels": 8250,
                "absent": False,
            },
            "cat": {
                "index": 1,
                "iou": 32.0,
                "acc": 80.0,
                "dice": 48.4848,
                "gt_pixels": 1000,
                "pred_pixels": 2300,
                "absent": False,
            },
            HOSTILE: {
                "index": 2,
                "iou": 56.1404,
                "acc": 80.0,
                "dice": 71.9101,
                "gt_pixels": 2000,
                "pred_pixels": 2450,
                "absent": False,
            },
            "cow": {
                "index": 3,
                "iou": None,
                "acc": None,
                "dice": None,
                "gt_pixels": 0,
                "pred_pixels": 0,
                "absent": True,
            },
        },  # fmt: skip
        "confusion_matrix": [[8000, 1200, 800, 0], [150, 800, 50, 0], [100, 300, 1600, 0], [0, 0, 0, 0]],
        "top_confusions": [
            {"gt": HOSTILE, "pred": "cat", "pixels": 300, "fraction_of_gt": 15.0},
            {"gt": "cat", "pred": "background", "pixels": 150, "fraction_of_gt": 15.0},
            {"gt": "background", "pred": "cat", "pixels": 1200, "fraction_of_gt": 12.0},
        ],
        "size": {
            "thresholds": [64, 1024],
            "unit": "pixels of a ground-truth region",
            "buckets": {
                "small": {
                    "regions": 8,
                    "pixels": 500,
                    "hit_pixels": 205,
                    "pixel_recall": 41.0,
                    "mean_region_recall": 36.0,
                },
                "medium": {
                    "regions": 1,
                    "pixels": 1000,
                    "hit_pixels": 800,
                    "pixel_recall": 80.0,
                    "mean_region_recall": 80.0,
                },
                "large": {
                    "regions": 1,
                    "pixels": 1500,
                    "hit_pixels": 1320,
                    "pixel_recall": 88.0,
                    "mean_region_recall": 88.0,
                },
            },  # fmt: skip
        },
        # band: 1200 of 2000 correct; interior 9200 of 11000 = 83.6364%
        "boundary": {
            "width": 3,
            "band_pixels": 2000,
            "band_acc": 60.0,
            "interior_pixels": 11000,
            "interior_acc": 83.6364,
        },  # fmt: skip
        "per_image": [
            {"name": "2008_000123", "miou": 12.5, "pixel_acc": 70.0},
            {"name": "odd <name>", "miou": 30.0, "pixel_acc": 85.0},
        ],  # fmt: skip
        "worst": [
            {"name": "2008_000123", "miou": 12.5, "file": WORST_FILES[0]},
            {"name": "odd <name>", "miou": 30.0, "file": WORST_FILES[1]},
        ],
        "tta_comparison": None,
        "label_problems": [
            {"name": "2008_000123", "path": "/data/a&b.png", "kind": "unknown_label", "detail": "value 37"},
            {"name": "x", "path": "/data/x.png", "kind": "size_mismatch", "detail": "<100x80> vs 90x80"},
        ],
        "seconds": 12.5,
        "images_per_s": 0.16,
    }


def write_panels(out_dir: Path) -> list[bytes]:
    """The two worst-image PNGs, distinct so their embedded copies can be told apart."""
    data = []
    for k, rel in enumerate(WORST_FILES):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8 + k, 4), (200, 10 * k, 0)).save(path)
        data.append(path.read_bytes())
    return data


def data_uris(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def png_ok(fig: Figure) -> bytes:
    png = report._png(fig)
    assert png.startswith(b"\x89PNG")  # drawing succeeds (no mathtext error from "$x$")
    return png


# --- summary and Markdown ------------------------------------------------------------------


def test_summary_line_exact():
    expected = (
        "deeplabv3_resnet50 on coco-voc val (2 images, torchvision protocol): mIoU 55.4, pixel acc 80.0 "
        "(published 66.4 / 92.4)"
    )
    assert summary_line(make_metrics()) == expected


def test_summary_line_without_published_with_tta_one_image():
    m = make_metrics() | {"published": None, "tta": "flip"}
    m["dataset"] = m["dataset"] | {"images": 1}
    expected = "deeplabv3_resnet50 on coco-voc val (1 image, torchvision protocol, TTA flip): mIoU 55.4, pixel acc 80.0"
    assert summary_line(m) == expected


def test_markdown_published_line_exact():
    md = render_markdown(make_metrics())
    # 55.3964 - 66.4 = -11.0036; 80.0 - 92.4 = -12.4
    line = f"published 66.4 / 92.4, measured 55.4 / 80.0 (mIoU / pixel acc; difference -11.0 / -12.4; source: {SOURCE})"
    assert line in md.splitlines()
    assert "| mIoU | 55.4 | 66.4 |" in md.splitlines()


def test_markdown_without_published_omits_the_comparison():
    md = render_markdown(make_metrics() | {"published": None})
    assert "published" not in md
    assert "| mIoU | 55.4 |" in md.splitlines()


def test_markdown_native_protocol_warns_published_is_not_comparable():
    md = render_markdown(make_metrics() | {"protocol": "native"})
    assert "the published numbers use the torchvision protocol, this run the native one" in md


def test_markdown_per_class_rows_exact_and_escaped():
    lines = render_markdown(make_metrics()).splitlines()
    assert "| class | IoU | acc | Dice | gt pixels | pred pixels |" in lines
    assert "| background | 78.0 | 80.0 | 87.7 | 10,000 | 8,250 |" in lines
    assert "| cat | 32.0 | 80.0 | 48.5 | 1,000 | 2,300 |" in lines
    assert '| \\<b>\\&"dog$x$ | 56.1 | 80.0 | 71.9 | 2,000 | 2,450 |' in lines  # "<" and "&" escaped
    assert "| cow | absent | n/a | n/a | 0 | 0 |" in lines
    assert HOSTILE not in "\n".join(lines) and "<b>&" not in "\n".join(lines)


def test_markdown_absent_class_predicted_keeps_its_score():
    m = copy.deepcopy(make_metrics())
    m["per_class"]["cow"] |= {"iou": 0.0, "pred_pixels": 5}
    assert "| cow | 0.0 (absent) | n/a | n/a | 0 | 5 |" in render_markdown(m).splitlines()


def test_markdown_confusions_size_boundary_tables():
    lines = render_markdown(make_metrics()).splitlines()
    assert '| \\<b>\\&"dog$x$ -> cat | 300 | 15.0% of \\<b>\\&"dog$x$ pixels |' in lines
    assert "| cat -> background | 150 | 15.0% of cat pixels |" in lines
    # areas are whole pixels: small < 64 <= medium <= 1023 < 1024 <= large
    assert "| small (under 64 px) | 8 | 500 | 41.0 | 36.0 |" in lines
    assert "| medium (64 - 1,023 px) | 1 | 1,000 | 80.0 | 80.0 |" in lines
    assert "| large (1,024 px and over) | 1 | 1,500 | 88.0 | 88.0 |" in lines
    assert "| boundary band (3 px) | 2,000 | 60.0 |" in lines
    assert "| interior | 11,000 | 83.6 |" in lines


def test_markdown_reading_paragraph_is_computed():
    lines = render_markdown(make_metrics()).splitlines()
    assert "- Weakest class: cat (IoU 32.0); strongest: background (IoU 78.0)." in lines
    assert (
        "- Small objects: 41.0% of pixels recalled vs 88.0% for large ones; small objects are lost far more often "
        "(47.0 points lower). The average small region has 36.0% of its pixels found (8 small regions)."
    ) in lines
    # band errors 2000 * 40 = 80000, interior 11000 * 16.3636 = 180000: 80000 / 260000 = 30.8% of errors;
    # band pixels 2000 / 13000 = 15.4%
    assert (
        "- Within 3 px of a class boundary 60.0% of pixels are correct vs 83.6% inside regions. The band holds "
        "15.4% of the pixels but 30.8% of the errors: most mistakes are inside regions (a wrong class), not at "
        "the edges."
    ) in lines


def test_markdown_worst_links_problems_and_absent_rule():
    m = make_metrics()
    md = render_markdown(m)
    lines = md.splitlines()
    assert "1. [2008_000123](worst/01_2008_000123.png): mIoU 12.5" in lines
    assert "2. [odd \\<name>](worst/02_odd%20name.png): mIoU 30.0" in lines
    assert "   ![odd \\<name>](worst/02_odd%20name.png)" in lines
    assert "| 2008_000123 | /data/a\\&b.png | unknown_label | value 37 |" in lines
    assert "2 label problems found." in lines
    assert m["absent_rule"] in lines
    assert "![" not in md.split("## Worst images")[0]  # no plots unless plots_dir_rel is given


def test_markdown_embeds_plots_when_asked():
    md = render_markdown(make_metrics(), plots_dir_rel="plots")
    for caption, key in [("Confusion matrix", "confusion"), ("IoU per class", "per_class_iou"),
                         ("Recall by object size", "size"), ("Accuracy near boundaries", "boundary")]:  # fmt: skip
        assert f"![{caption}](plots/{key}.png)" in md.splitlines()


def test_markdown_label_problems_first_50_and_count():
    m = make_metrics()
    m["label_problems"] = [{"name": f"im{i}", "path": f"/d/im{i}.png", "kind": "k", "detail": "d"} for i in range(53)]
    lines = render_markdown(m).splitlines()
    assert "| im49 | /d/im49.png | k | d |" in lines
    assert "| im50 | /d/im50.png | k | d |" not in lines
    assert "53 label problems found." in lines
    assert "The first 50 are listed; all 53 are in metrics.json." in lines


def test_markdown_tta_section_only_when_compared():
    assert "Test-time augmentation" not in render_markdown(make_metrics())
    m = make_metrics() | {"tta": "flip"}
    m["tta_comparison"] = {"plain": {"miou": 54.6, "pixel_acc": 79.7}, "tta": {"miou": 55.3964, "pixel_acc": 80.0},
                           "gain_miou": 0.7964, "gain_pixel_acc": 0.3}  # fmt: skip
    lines = render_markdown(m).splitlines()
    assert "| plain | 54.6 | 79.7 |" in lines
    assert "| TTA (flip) | 55.4 | 80.0 |" in lines
    assert "| gain | +0.8 | +0.3 |" in lines


# --- plots ---------------------------------------------------------------------------------


def test_plot_confusion_row_normalised_with_blank_absent_row():
    fig = plot_confusion(make_metrics())
    assert isinstance(fig, Figure)
    values = fig.axes[0].images[0].get_array()
    expected = [[80, 12, 8, 0], [15, 80, 5, 0], [5, 15, 80, 0]]  # 100 * cm[i, j] / row sum, see make_metrics
    np.testing.assert_array_equal(values[:3].filled(-1), expected)
    assert values.mask[3].all() and not values.mask[:3].any()
    names = ["background", "cat", '<b>&"dog\\$x\\$', "cow"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == names
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == names
    assert len(fig.axes) == 2  # the heatmap and its colour bar
    png_ok(fig)


def test_plot_confusion_150_classes_at_most_40_labels():
    m = make_metrics()
    m["class_names"] = [f"c{i}" for i in range(150)]
    m["confusion_matrix"] = np.eye(150, dtype=int).tolist()
    ax = plot_confusion(m).axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [f"c{i}" for i in range(0, 150, 4)]  # ceil(150 / 40) = 4: 38 labels
    assert len(ax.texts) == 0  # no per-cell numbers at this size


def test_plot_per_class_iou_sorted_voc_coloured_outlined():
    fig = plot_per_class_iou(make_metrics())
    ax = fig.axes[0]
    bars = ax.patches
    assert [b.get_width() for b in bars] == [32.0, 56.1404, 78.0488]  # ascending from the bottom; cow left out
    voc = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0)}  # background, cat, dog
    for bar, index in zip(bars, (1, 2, 0)):
        assert bar.get_facecolor()[:3] == pytest.approx(tuple(c / 255 for c in voc[index]))
        assert bar.get_edgecolor()[:3] == pytest.approx((0.2, 0.2, 0.2))
        assert bar.get_linewidth() > 0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", '<b>&"dog\\$x\\$', "background"]
    assert list(ax.lines[0].get_xdata()) == [55.3964, 55.3964]
    png_ok(fig)


def test_plot_size_grouped_bars_and_region_counts():
    ax = plot_size(make_metrics()).axes[0]
    assert [b.get_height() for b in ax.patches] == [41.0, 80.0, 88.0, 36.0, 80.0, 88.0]
    assert [t.get_text() for t in ax.texts] == ["8 regions", "1 regions", "1 regions"]
    png_ok(ax.figure)


def test_plot_boundary_bars_and_width():
    ax = plot_boundary(make_metrics()).axes[0]
    assert [b.get_height() for b in ax.patches] == [60.0, 83.6364]
    assert ax.get_title() == "Accuracy near boundaries (band width 3 px)"
    png_ok(ax.figure)


# --- HTML ----------------------------------------------------------------------------------


def test_html_self_contained_and_escaped(tmp_path):
    panels = write_panels(tmp_path)
    text = render_html(make_metrics(), out_dir=tmp_path)
    links = re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', text, flags=re.IGNORECASE)
    assert links and all(link.startswith("data:image/png;base64,") for link in links)
    assert not re.search(r"https?://", text)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    embedded = data_uris(text)
    assert len(embedded) == 6  # four plots and two worst-image panels
    assert embedded[4:] == panels
    assert all(png.startswith(b"\x89PNG") for png in embedded)
    assert "&lt;b&gt;&amp;&quot;dog$x$" in text and HOSTILE not in text and "<b>" not in text
    assert "odd &lt;name&gt;" in text and "/data/a&amp;b.png" in text and "&lt;100x80&gt; vs 90x80" in text
    assert '<td class="r">78.0</td>' in text


def test_html_refuses_panels_outside_out_dir_or_not_png(tmp_path):
    out = tmp_path / "out"
    write_panels(out)
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    (out / "worst" / "fake.png").write_text("not a png")
    m = make_metrics()
    m["worst"] = [
        {"name": "a", "miou": 1.0, "file": "../secret.png"},
        {"name": "b", "miou": 2.0, "file": "worst/fake.png"},
    ]
    text = render_html(m, out_dir=out)
    assert len(data_uris(text)) == 4  # the plots only
    assert "panel image missing or not a PNG: ../secret.png" in text
    assert "panel image missing or not a PNG: worst/fake.png" in text


# --- write_report --------------------------------------------------------------------------


def test_write_report_files_and_round_trip(tmp_path):
    write_panels(tmp_path)
    m = make_metrics()
    paths = write_report(m, tmp_path)
    expected = {"metrics.json", "report.md", "report.html", *PLOT_FILES, *WORST_FILES}
    assert {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()} == expected
    assert paths == {
        "metrics": tmp_path / "metrics.json",
        "md": tmp_path / "report.md",
        "html": tmp_path / "report.html",
        **{key: tmp_path / "plots" / f"{key}.png" for key in ("confusion", "per_class_iou", "size", "boundary")},
    }
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8")) == m
    assert m == make_metrics()  # input left unchanged
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == render_markdown(m, plots_dir_rel="plots")
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == render_html(m, out_dir=tmp_path)
    for rel in PLOT_FILES:
        assert (tmp_path / rel).read_bytes().startswith(b"\x89PNG")


def test_write_report_skips_plots_without_data(tmp_path):
    m = make_metrics()
    empty = {"regions": 0, "pixels": 0, "hit_pixels": 0, "pixel_recall": None, "mean_region_recall": None}
    m["size"]["buckets"] = {name: dict(empty) for name in ("small", "medium", "large")}
    m["boundary"] |= {"band_pixels": 0, "band_acc": None, "interior_pixels": 0, "interior_acc": None}
    m["worst"] = []
    paths = write_report(m, tmp_path)
    assert sorted(paths) == ["confusion", "html", "md", "metrics", "per_class_iou"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["confusion.png", "per_class_iou.png"]
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "plots/size.png" not in md and "plots/boundary.png" not in md
    assert "| small (under 64 px) | 0 | 0 | n/a | n/a |" in md.splitlines()
    assert len(data_uris((tmp_path / "report.html").read_text(encoding="utf-8"))) == 2


def test_write_report_refuses_nan(tmp_path):
    with pytest.raises(ValueError, match="use None instead of NaN"):
        write_report(make_metrics() | {"miou": float("nan")}, tmp_path)
