import ast
import io
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from seglens import visualize
from seglens.visualize import ClassStat, class_stats, colorize, display_name, figure, overlay, voc_palette

# torchvision's VOC categories (weights.meta["categories"] of the VOC-trained segmentation models).
VOC_CATEGORIES = [
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip

# The VOC devkit colour map (VOClabelcolormap.m), classes 0..20, written out by hand.
VOC_COLORS = {
    0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128), 5: (128, 0, 128),
    6: (0, 128, 128), 7: (128, 128, 128), 8: (64, 0, 0), 9: (192, 0, 0), 10: (64, 128, 0), 11: (192, 128, 0),
    12: (64, 0, 128), 13: (192, 0, 128), 14: (64, 128, 128), 15: (192, 128, 128), 16: (0, 64, 0),
    17: (128, 64, 0), 18: (0, 192, 0), 19: (128, 192, 0), 20: (0, 64, 128),
}  # fmt: skip


# --- palette -------------------------------------------------------------------------------


def test_voc_palette_matches_devkit_for_all_voc_classes():
    palette = voc_palette()
    for index, color in VOC_COLORS.items():
        assert tuple(palette[index]) == color, VOC_CATEGORIES[index]
    assert tuple(palette[255]) == (224, 224, 192)  # VOC's "void" / boundary label


def test_voc_palette_shape_dtype_and_distinct():
    palette = voc_palette()
    assert palette.shape == (256, 3)
    assert palette.dtype == np.uint8
    assert len({tuple(c) for c in palette}) == 256


def test_voc_palette_matches_imgviz():
    imgviz = pytest.importorskip("imgviz")
    np.testing.assert_array_equal(voc_palette(), imgviz.label_colormap())


def test_voc_palette_n_is_a_prefix():
    np.testing.assert_array_equal(voc_palette(21), voc_palette()[:21])
    assert voc_palette(1).shape == (1, 3)


def test_voc_palette_returns_a_fresh_array():
    palette = voc_palette()
    palette[0] = 255
    assert tuple(voc_palette()[0]) == (0, 0, 0)


@pytest.mark.parametrize("n", [0, 257, -1, 2.5, True])
def test_voc_palette_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n must be an integer in 1..256"):
        voc_palette(n)


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "expected"),
    [("__background__", "background"), ("person", "person"), ("tvmonitor", "tvmonitor"), ("N/A", "N/A")],
)
def test_display_name(category, expected):
    assert display_name(category) == expected


# --- colorize ------------------------------------------------------------------------------


def test_colorize_exact():
    labels = np.array([[0, 15, 20], [255, 0, 15]], dtype=np.uint8)
    expected = np.array(
        [
            [(0, 0, 0), (192, 128, 128), (0, 64, 128)],
            [(224, 224, 192), (0, 0, 0), (192, 128, 128)],
        ],
        dtype=np.uint8,
    )
    out = colorize(labels)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_colorize_custom_palette():
    palette = np.array([(1, 2, 3), (4, 5, 6)], dtype=np.uint8)
    out = colorize(np.array([[1, 0]]), palette)
    np.testing.assert_array_equal(out, [[(4, 5, 6), (1, 2, 3)]])


def test_colorize_value_beyond_palette():
    with pytest.raises(ValueError, match="label value 21 is outside the palette of 21 colours"):
        colorize(np.array([[0, 21]]), voc_palette(21))


def test_colorize_rejects_negative_and_float_labels():
    with pytest.raises(ValueError, match="non-negative"):
        colorize(np.array([[0, -1]]))
    with pytest.raises(ValueError, match="integer array"):
        colorize(np.zeros((2, 2), dtype=np.float32))


def test_colorize_rejects_bad_palette():
    with pytest.raises(ValueError, match=r"palette must be an \(N, 3\) uint8 array"):
        colorize(np.zeros((2, 2), dtype=np.int64), np.zeros((4, 3), dtype=np.int64))


# --- overlay -------------------------------------------------------------------------------


def _overlay_inputs():
    labels = np.array([[0, 1, 15]])
    image = np.array([[(7, 8, 9), (100, 101, 51), (10, 20, 30)]], dtype=np.uint8)
    return image, labels


def test_overlay_exact():
    image, labels = _overlay_inputs()
    out = overlay(image, labels, alpha=0.5)
    # pixel 0: label 0 = background -> unchanged (7, 8, 9)
    # pixel 1: colour (128, 0, 0): 0.5*100+0.5*128 = 114; 0.5*101 = 50.5 -> 50; 0.5*51 = 25.5 -> 26
    #          (np.rint rounds halves to even)
    # pixel 2: colour (192, 128, 128): (10+192)/2 = 101; (20+128)/2 = 74; (30+128)/2 = 79
    expected = np.array([[(7, 8, 9), (114, 50, 26), (101, 74, 79)]], dtype=np.uint8)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_overlay_quarter_alpha_exact():
    image, labels = _overlay_inputs()
    out = overlay(image, labels, alpha=0.25)
    # pixel 1: 0.75*100+0.25*128 = 107; 0.75*101 = 75.75 -> 76; 0.75*51 = 38.25 -> 38
    # pixel 2: 0.75*10+0.25*192 = 55.5 -> 56; 0.75*20+0.25*128 = 47; 0.75*30+0.25*128 = 54.5 -> 54
    np.testing.assert_array_equal(out, [[(7, 8, 9), (107, 76, 38), (56, 47, 54)]])


def test_overlay_background_none_tints_everything():
    image, labels = _overlay_inputs()
    out = overlay(image, labels, alpha=0.5, background=None)
    # pixel 0: colour (0, 0, 0): 3.5 -> 4, 4, 4.5 -> 4
    np.testing.assert_array_equal(out[0, 0], (4, 4, 4))
    np.testing.assert_array_equal(out[0, 1:], overlay(image, labels, alpha=0.5)[0, 1:])


def test_overlay_other_background_label():
    image, labels = _overlay_inputs()
    out = overlay(image, labels, alpha=1.0, background=15)
    np.testing.assert_array_equal(out, [[(0, 0, 0), (128, 0, 0), (10, 20, 30)]])


def test_overlay_alpha_extremes():
    image, labels = _overlay_inputs()
    np.testing.assert_array_equal(overlay(image, labels, alpha=0.0), image)
    np.testing.assert_array_equal(overlay(image, labels, alpha=1.0), [[(7, 8, 9), (128, 0, 0), (192, 128, 128)]])


def test_overlay_accepts_pil_image_and_converts_to_rgb():
    image, labels = _overlay_inputs()
    rgba = Image.fromarray(np.dstack([image, np.full(labels.shape, 255, np.uint8)]), mode="RGBA")
    np.testing.assert_array_equal(overlay(rgba, labels), overlay(image, labels))
    gray = Image.fromarray(np.array([[50, 50, 50]], dtype=np.uint8), mode="L")
    # pixel 2: (50+192)/2 = 121, (50+128)/2 = 89
    np.testing.assert_array_equal(overlay(gray, labels)[0, 2], (121, 89, 89))


def test_overlay_does_not_modify_inputs():
    image, labels = _overlay_inputs()
    before = image.copy()
    overlay(image, labels, alpha=1.0)
    np.testing.assert_array_equal(image, before)


def test_overlay_shape_mismatch():
    with pytest.raises(ValueError, match=r"image shape \(2, 3, 3\) does not match labels shape \(3, 2\)"):
        overlay(np.zeros((2, 3, 3), np.uint8), np.zeros((3, 2), np.int64))


def test_overlay_rejects_non_uint8_image():
    with pytest.raises(ValueError, match="uint8 array"):
        overlay(np.zeros((2, 2, 3), np.float32), np.zeros((2, 2), np.int64))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_overlay_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        overlay(np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.int64), alpha=alpha)


# --- class_stats ---------------------------------------------------------------------------


def test_class_stats_exact():
    labels = np.array([[0, 0, 15, 15], [15, 7, 3, 255]])
    # 8 pixels: person (15) x3, background (0) x2, then bird (3), car (7), 255 x1 each (ties by index)
    assert class_stats(labels, VOC_CATEGORIES) == [
        ClassStat(index=15, name="person", pixels=3, fraction=0.375, color=(192, 128, 128)),
        ClassStat(index=0, name="background", pixels=2, fraction=0.25, color=(0, 0, 0)),
        ClassStat(index=3, name="bird", pixels=1, fraction=0.125, color=(128, 128, 0)),
        ClassStat(index=7, name="car", pixels=1, fraction=0.125, color=(128, 128, 128)),
        ClassStat(index=255, name="class 255", pixels=1, fraction=0.125, color=(224, 224, 192)),
    ]


def test_class_stats_types_and_custom_palette():
    palette = np.array([(1, 2, 3), (4, 5, 6)], dtype=np.uint8)
    (stat,) = class_stats(np.ones((2, 2), dtype=np.uint8), ["a", "b"], palette)
    assert stat == ClassStat(index=1, name="b", pixels=4, fraction=1.0, color=(4, 5, 6))
    assert type(stat.index) is int and type(stat.pixels) is int and type(stat.fraction) is float
    assert all(type(c) is int for c in stat.color)


def test_class_stats_label_beyond_palette():
    with pytest.raises(ValueError, match="label value 2 is outside the palette of 2 colours"):
        class_stats(np.array([[2]]), ["a", "b", "c"], np.zeros((2, 3), np.uint8))


# --- figure --------------------------------------------------------------------------------


def _legend(fig):
    (legend,) = fig.legends
    return legend


def _tiny_scene():
    labels = np.array([[0, 0, 15, 15], [15, 7, 3, 255]])
    image = np.full((2, 4, 3), 90, dtype=np.uint8)
    return image, labels


def test_figure_axes_titles_and_legend():
    image, labels = _tiny_scene()
    fig = figure(image, labels, VOC_CATEGORIES, title="tiny")
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["Image", "Segmentation"]
    assert not any(ax.axison for ax in fig.axes)
    assert fig.get_suptitle() == "tiny"
    legend = _legend(fig)
    assert [t.get_text() for t in legend.get_texts()] == [
        "person  37.5%",
        "background  25.0%",
        "bird  12.5%",
        "car  12.5%",
        "class 255  12.5%",
    ]
    palette = voc_palette()
    for handle, index in zip(legend.legend_handles, [15, 0, 3, 7, 255]):
        np.testing.assert_allclose(handle.get_facecolor()[:3], palette[index] / 255)


def test_figure_panels_show_image_and_mask():
    image, labels = _tiny_scene()
    fig = figure(image, labels, VOC_CATEGORIES)
    shown = [ax.get_images()[0].get_array() for ax in fig.axes]
    np.testing.assert_array_equal(shown[0], image)
    np.testing.assert_array_equal(shown[1], colorize(labels))


def test_figure_with_alpha_has_overlay_panel():
    image, labels = _tiny_scene()
    fig = figure(image, labels, VOC_CATEGORIES, alpha=0.5)
    assert [ax.get_title() for ax in fig.axes] == ["Image", "Segmentation", "Overlay"]
    np.testing.assert_array_equal(fig.axes[2].get_images()[0].get_array(), overlay(image, labels, alpha=0.5))


def test_figure_size_follows_aspect_ratio():
    wide = figure(np.zeros((10, 40, 3), np.uint8), np.zeros((10, 40), np.int64), VOC_CATEGORIES)
    tall = figure(np.zeros((40, 10, 3), np.uint8), np.zeros((40, 10), np.int64), VOC_CATEGORIES)
    (wide_w, wide_h), (tall_w, tall_h) = wide.get_size_inches(), tall.get_size_inches()
    assert wide_w / wide_h > 2 * tall_w / tall_h


def test_figure_legend_does_not_cover_axes_with_all_21_classes():
    labels = (np.arange(20 * 30).reshape(20, 30) % 21).astype(np.int64)
    fig = figure(np.zeros((20, 30, 3), np.uint8), labels, VOC_CATEGORIES, alpha=0.5)
    legend = _legend(fig)
    assert len(legend.get_texts()) == 21
    FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    columns = {round(t.get_window_extent().x0) for t in legend.get_texts()}
    assert len(columns) > 1  # several columns, not one 21-row strip
    legend_box = legend.get_window_extent()
    for ax in fig.axes:
        assert not legend_box.overlaps(ax.get_window_extent())
    assert legend_box.y0 >= 0  # fully inside the figure


def test_figure_saves_png_bytes():
    image, labels = _tiny_scene()
    buf = io.BytesIO()
    figure(image, labels, VOC_CATEGORIES).savefig(buf, format="png", dpi=50)
    decoded = Image.open(io.BytesIO(buf.getvalue()))
    assert decoded.format == "PNG"
    assert decoded.size[0] > 0 and decoded.size[1] > 0


def test_figure_on_astronaut_with_pil_input():
    data = pytest.importorskip("skimage.data")
    image = Image.fromarray(data.astronaut())  # 512 x 512 RGB
    labels = np.zeros((512, 512), dtype=np.int64)
    labels[100:400, 150:350] = 15  # person: 300 * 200 = 60000 px
    labels[0:80, :] = 20  # tvmonitor: 80 * 512 = 40960 px
    labels[450:, :200] = 9  # chair: 62 * 200 = 12400 px
    fig = figure(image, labels, VOC_CATEGORIES, title="astronaut", alpha=0.4)
    # 262144 px: background 262144 - 113360 = 148784 -> 56.8%; 22.9%; 15.6%; 4.7%
    assert [t.get_text() for t in _legend(fig).get_texts()] == [
        "background  56.8%",
        "person  22.9%",
        "tvmonitor  15.6%",
        "chair  4.7%",
    ]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    width, height = Image.open(io.BytesIO(buf.getvalue())).size
    assert width > 2 * height  # three square panels side by side


def test_figure_rejects_mismatched_image():
    with pytest.raises(ValueError, match="does not match labels shape"):
        figure(np.zeros((3, 3, 3), np.uint8), np.zeros((2, 2), np.int64), VOC_CATEGORIES)


def test_figure_in_worker_threads():
    image, labels = _tiny_scene()

    def render(_):
        buf = io.BytesIO()
        figure(image, labels, VOC_CATEGORIES, alpha=0.5).savefig(buf, format="png", dpi=30)
        return Image.open(io.BytesIO(buf.getvalue())).size

    with ThreadPoolExecutor(max_workers=4) as pool:
        sizes = list(pool.map(render, range(8)))
    assert len(set(sizes)) == 1


def test_nothing_printed(capsys):
    image, labels = _tiny_scene()
    figure(image, labels, VOC_CATEGORIES, alpha=0.5).savefig(io.BytesIO(), format="png")
    assert capsys.readouterr() == ("", "")


# --- module hygiene ------------------------------------------------------------------------


def test_module_never_imports_pyplot():
    code = textwrap.dedent(
        """
        import io, sys
        import numpy as np
        import seglens.visualize as v
        fig = v.figure(np.zeros((4, 4, 3), np.uint8), np.eye(4, dtype=np.int64), ["__background__", "a"])
        fig.savefig(io.BytesIO(), format="png")
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_module_source_has_no_torch_pyplot_print_or_open():
    tree = ast.parse(Path(visualize.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    assert not any(name.split(".")[0] == "torch" for name in imported)
    assert not any("pyplot" in name for name in imported)
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not called & {"print", "open"}


def test_all_lists_the_public_api():
    assert sorted(visualize.__all__) == [
        "ADE20K_CATEGORIES", "CITYSCAPES_CATEGORIES", "ClassStat", "ade20k_palette", "background_index",
        "cityscapes_palette", "class_stats", "colorize", "comparison_figure", "display_name", "distinct_palette",
        "error_map", "figure", "heat_palette", "outline_low_confidence", "overlay", "palette_for", "voc_palette",
    ]  # fmt: skip


def test_error_map_exact():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)  # gray 100 -> dimmed to 50
    target = np.array([[0, 1, 255], [2, 2, 1]])
    pred = np.array([[0, 2, 1], [2, 1, 1]])
    out = visualize.error_map(image, target, pred)
    # (0,0) right, (0,1) wrong, (0,2) ignored, (1,0) right, (1,1) wrong, (1,2) right
    expected = np.array(
        [[[50, 50, 50], [255, 0, 0], [224, 224, 192]], [[50, 50, 50], [255, 0, 0], [50, 50, 50]]], dtype=np.uint8
    )
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match=r"target \(2, 3\) and prediction \(3, 2\) differ"):
        visualize.error_map(image, target, pred.T)


def test_comparison_figure_panels_and_legend():
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    target = np.zeros((20, 30), dtype=np.uint8)
    target[:10] = 15  # person: half the ground truth
    target[-2:] = 255
    pred = np.zeros((20, 30), dtype=np.uint8)
    pred[:5] = 15  # a quarter predicted person
    pred[5:10] = 8  # a quarter cat, absent from the ground truth
    cats = ["__background__"] + [f"c{i}" for i in range(1, 21)]
    cats[15], cats[8] = "person", "cat"
    fig = visualize.comparison_figure(image, target, pred, cats)
    assert [ax.get_title() for ax in fig.axes] == ["Image", "Ground truth", "Prediction", "Errors"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    # background: 10 of 20 rows -> 40.0% of gt (rows 10..17) / 50.0% of prediction
    assert labels == [
        "background  40.0% / 50.0%",
        "cat  - / 25.0%",
        "person  50.0% / 25.0%",
        "wrong",
        "no ground truth",
    ]


def test_tiny_classes_never_read_as_zero_percent():
    labels = np.zeros((100, 100), dtype=np.uint8)
    labels[0, 0] = 15  # 1 pixel of 10 000: 0.01%
    labels[1, :6] = 8  # 6 pixels: 0.06% rounds to 0.1%
    fig = visualize.figure(
        np.zeros((100, 100, 3), dtype=np.uint8),
        labels,
        ["__background__"] + ["x"] * 7 + ["cat"] + ["x"] * 6 + ["person"],
    )
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background  99.9%", "cat  0.1%", "person  <0.1%"]


# --- dataset palettes ----------------------------------------------------------------------

# Spot colours from the published lists (MMSegmentation's ADE20KDataset / CityscapesDataset METAINFO).
ADE20K_SPOTS = {0: ("wall", (120, 120, 120)), 2: ("sky", (6, 230, 230)), 12: ("person", (150, 5, 61)),
                20: ("car", (0, 102, 200)), 48: ("skyscraper", (140, 140, 140)),
                149: ("flag", (92, 0, 255))}  # fmt: skip
CITYSCAPES_SPOTS = {0: ("road", (128, 64, 128)), 1: ("sidewalk", (244, 35, 232)), 11: ("person", (220, 20, 60)),
                    13: ("car", (0, 0, 142)), 18: ("bicycle", (119, 11, 32))}  # fmt: skip


def test_ade20k_palette_matches_published_colours():
    palette = visualize.ade20k_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    for index, (name, color) in ADE20K_SPOTS.items():
        assert visualize.ADE20K_CATEGORIES[index] == name
        assert tuple(palette[index]) == color, name
    assert len(visualize.ADE20K_CATEGORIES) == 150 and not palette[150:].any()


def test_cityscapes_palette_matches_published_colours():
    palette = visualize.cityscapes_palette()
    assert palette.shape == (256, 3)
    for index, (name, color) in CITYSCAPES_SPOTS.items():
        assert visualize.CITYSCAPES_CATEGORIES[index] == name
        assert tuple(palette[index]) == color, name
    assert len(visualize.CITYSCAPES_CATEGORIES) == 19 and not palette[19:].any()


def test_distinct_palette_is_deterministic_and_distinct():
    colors = visualize.distinct_palette(256)
    assert colors.shape == (256, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 256  # no two equal
    assert not (colors.sum(axis=1) == 0).any()  # none black
    np.testing.assert_array_equal(visualize.distinct_palette(10), colors[:10])  # a prefix, call after call
    first = colors[:20].astype(int)
    assert np.abs(first[:, None] - first[None]).sum(-1)[~np.eye(20, dtype=bool)].min() >= 60  # far apart
    with pytest.raises(ValueError, match="1..256"):
        visualize.distinct_palette(257)


ADE_HF = [n + " " if n == "bed" else n for n in visualize.ADE20K_CATEGORIES]  # HF's ade20k-id2label.json writes "bed "
ADE_DETECTRON = [
    "road, route" if n == "road" else "window " if n == "windowpane" else n for n in visualize.ADE20K_CATEGORIES
]
CITY_TITLE = [n.title() for n in visualize.CITYSCAPES_CATEGORIES]
VOC_HF = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
          "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train",
          "tv/monitor"]  # fmt: skip


@pytest.mark.parametrize(
    "categories, expected",
    [
        (VOC_CATEGORIES, "voc"),
        (VOC_HF, "voc"),  # "tv/monitor" differs: 20 of 21 agree
        (list(visualize.ADE20K_CATEGORIES), "ade20k"),
        (ADE_HF, "ade20k"),
        (ADE_DETECTRON, "ade20k"),
        (list(visualize.CITYSCAPES_CATEGORIES), "cityscapes"),
        (CITY_TITLE, "cityscapes"),
        (list(reversed(visualize.CITYSCAPES_CATEGORIES)), "distinct"),  # same names, other order: other colours
        (VOC_CATEGORIES[:20], "distinct"),
        (["sky", "tree", "road"], "distinct"),
    ],
    ids=["voc-torchvision", "voc-hf", "ade20k", "ade20k-hf", "ade20k-detectron2", "cityscapes", "cityscapes-title",
         "cityscapes-reversed", "voc-minus-one", "other"],
)  # fmt: skip
def test_palette_for_recognises_datasets_by_names(categories, expected):
    reference = {
        "voc": visualize.voc_palette(),
        "ade20k": visualize.ade20k_palette(),
        "cityscapes": visualize.cityscapes_palette(),
        "distinct": visualize.distinct_palette(256),
    }[expected]
    palette = visualize.palette_for(categories)
    if expected == "distinct" and visualize.background_index(categories) == 0:
        reference[0] = 0
    np.testing.assert_array_equal(palette, reference)


def test_generated_palette_keeps_background_black_only_when_class_0_is_background():
    assert visualize.background_index(["__background__", "cat"]) == 0
    assert visualize.background_index(["Unlabeled", "cat"]) == 0
    assert visualize.background_index(["wall", "background"]) is None
    assert visualize.background_index([]) is None
    assert tuple(visualize.palette_for(["background", "lesion"])[0]) == (0, 0, 0)
    assert tuple(visualize.palette_for(["lesion", "background"])[0]) != (0, 0, 0)


def test_class_stats_mean_confidence_exact():
    labels = np.array([[0, 0, 1], [1, 1, 2]])
    conf = np.array([[255, 51, 102], [204, 255, 0]], dtype=np.uint8)
    stats = {s.index: s for s in visualize.class_stats(labels, ["a", "b", "c"], confidence=conf)}
    assert stats[0].confidence == pytest.approx((255 + 51) / 2 / 255)  # 0.6
    assert stats[1].confidence == pytest.approx((102 + 204 + 255) / 3 / 255)  # 0.7333
    assert stats[2].confidence == 0.0
    assert visualize.class_stats(labels, ["a", "b", "c"])[0].confidence is None
    with pytest.raises(ValueError, match="does not match"):
        visualize.class_stats(labels, ["a", "b", "c"], confidence=conf[:1])


def test_outline_low_confidence_marks_the_region_boundary_only():
    rgb = np.zeros((7, 7, 3), np.uint8)
    conf = np.full((7, 7), 255, np.uint8)
    conf[2:5, 2:5] = 10  # a 3x3 low-confidence square
    out = visualize.outline_low_confidence(rgb, conf, threshold=0.5, color=(1, 2, 3))
    marked = (out == (1, 2, 3)).all(-1)
    expected = np.zeros((7, 7), bool)
    expected[2:5, 2:5] = True
    expected[3, 3] = False  # the inside stays as it was; only the ring is drawn
    np.testing.assert_array_equal(marked, expected)
    assert (rgb == 0).all()  # the input is not modified


def test_heat_palette_runs_dark_to_bright():
    heat = visualize.heat_palette()
    assert heat.shape == (256, 3) and heat.dtype == np.uint8
    assert heat[0].sum() < 30 and heat[255].sum() > 600  # inferno: near black .. pale yellow


def test_figure_with_confidence_adds_a_heat_map_panel_and_legend_means():
    labels = np.array([[0, 1], [1, 1]])
    conf = np.array([[255, 128], [128, 128]], dtype=np.uint8)
    fig = visualize.figure(np.zeros((2, 2, 3), np.uint8), labels, ["background", "cat"], confidence=conf)
    assert [ax.get_title() for ax in fig.axes] == ["Image", "Segmentation", "Confidence"]
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["cat  75.0%  p=0.50", "background  25.0%  p=1.00"]
