"""Folder datasets from explicit folders, classes files (names, colours), mask_values, and
survey_labels' counts and dataset-level problems; tiny masks written to tmp_path, exact numbers."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from seglens.datasets import (
    DATASET_PROBLEM_KINDS,
    PROBLEM_KINDS,
    DatasetError,
    LabelProblem,
    open_dataset,
    parse_mask_values,
    read_classes,
    survey_labels,
    validate_labels,
)
from seglens.palettes import palette_for
from tests.test_datasets import _save, ade, coco  # noqa: F401  (fixtures)

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def _pair(images, masks, name: str, mask: np.ndarray) -> None:
    """An RGB photo crop images/NAME.png and its mask masks/NAME.png (same file name, as CamVid)."""
    h, w = mask.shape[:2]
    _save(images / f"{name}.png", skimage.data.chelsea()[:h, :w])
    _save(masks / f"{name}.png", mask)


# --- folder datasets from explicit folders --------------------------------------------------------


def test_folder_from_explicit_image_and_mask_folders(tmp_path):
    images, masks = tmp_path / "train", tmp_path / "trainannot"
    a = np.array([[0, 1, 2], [11, 11, 3]], dtype=np.uint8)  # CamVid: 11 is void
    b = np.full((2, 3), 4, dtype=np.uint8)
    _pair(images, masks, "0001TP_006690", a)
    _pair(images, masks, "sub/0001TP_006720", b)
    _save(images / "lonely.png", skimage.data.coffee()[:2, :3])  # no mask
    ds = open_dataset("folder", images=images, masks=masks, ignore_index=11)
    assert (ds.kind, ds.root, ds.mask_dir, ds.ignore_index) == ("folder", images, masks, 11)
    assert ds.names() == ["0001TP_006690", "sub/0001TP_006720"]
    assert ds.mask_path(1) == masks / "sub" / "0001TP_006720.png"
    np.testing.assert_array_equal(ds[0].target, a)
    np.testing.assert_array_equal(ds[1].target, b)
    assert ds.unmatched == (("lonely", images / "lonely.png"),)
    # the missing mask names the real masks folder, not ROOT/masks
    assert validate_labels(ds, 11) == [
        LabelProblem("lonely", str(images / "lonely.png"), "missing_mask", f"no mask: expected {masks / 'lonely'}.png")
    ]
    assert open_dataset("folder", images=images, masks=masks, limit=1).names() == ["0001TP_006690"]


def test_folder_dataset_flags_that_do_not_fit(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match=r"^a folder dataset is root= \(holding images/ and masks/\) or images= "
                                           r"and masks=, not both$"):  # fmt: skip
        open_dataset("folder", tmp_path, images=tmp_path / "images", masks=tmp_path / "masks")
    with pytest.raises(DatasetError, match=r"^masks= is missing: a folder dataset is images= \(the images folder\)"):
        open_dataset("folder", images=tmp_path / "images")
    with pytest.raises(DatasetError, match=r"^images= is missing: "):
        open_dataset("folder", masks=tmp_path / "masks")
    with pytest.raises(DatasetError, match=r"^a folder dataset needs root= \(a folder holding images/ and masks/\)"):
        open_dataset("folder")
    with pytest.raises(
        DatasetError, match=rf"^{tmp_path / 'annots'}: no such folder \(give the folder of the masks\)$"
    ):
        open_dataset("folder", images=tmp_path / "images", masks=tmp_path / "annots")
    with pytest.raises(DatasetError, match=r"^images= and masks= apply only to folder datasets \(voc takes root=\)$"):
        open_dataset("voc", images=tmp_path / "images", masks=tmp_path / "masks")
    with pytest.raises(DatasetError, match=r"^mask_values= apply only to folder datasets"):
        open_dataset("ade20k", tmp_path, mask_values=(0, 255))
    with pytest.raises(DatasetError, match=r"^coco-voc needs root= \(the dataset's folder\)$"):
        open_dataset("coco-voc")


# --- classes files -------------------------------------------------------------------------------


def test_classes_file_names_colours_and_comments(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text(
        "# CamVid, SegNet's colours\n"
        "\n"
        "sky 128,128,128\n"
        "  traffic light   #FAAA1E  \n"  # a name with a space; hex colour; stray spaces
        "lane #1 0,0,255\n"  # '#1' inside a name is not a colour
        "#road 1,2,3 (commented out)\n"
    )
    classes = read_classes(path)
    assert classes.names == ("sky", "traffic light", "lane #1")
    assert classes.colors == ((128, 128, 128), (250, 170, 30), (0, 0, 255))
    _save(tmp_path / "images" / "a.png", skimage.data.chelsea()[:2, :2])
    _save(tmp_path / "masks" / "a.png", np.zeros((2, 2), dtype=np.uint8))
    ds = open_dataset("folder", tmp_path, classes_file=path)
    assert ds.categories == ("sky", "traffic light", "lane #1") and ds.classes_file == path
    assert ds.palette.shape == (256, 3) and ds.palette.dtype == np.uint8
    np.testing.assert_array_equal(ds.palette[:3], [[128, 128, 128], [250, 170, 30], [0, 0, 255]])
    np.testing.assert_array_equal(ds.palette[3:], palette_for(ds.categories)[3:])  # the rest: distinct colours
    # names only: no palette, and "#1" stays part of a name
    path.write_text("background\nlane #1\n")
    assert read_classes(path).names == ("background", "lane #1") and read_classes(path).colors is None
    assert open_dataset("folder", tmp_path, classes_file=path).palette is None


@pytest.mark.parametrize(
    "text, match",
    [
        (
            "sky 128,128,128\nroad\ncar 64,0,128\n",
            r"classes\.txt:2: class 'road' has no colour, but other lines give one",
        ),
        ("# header\nsky 300,0,0\n", r"classes\.txt:2: colour 300,0,0 is out of range: R,G,B must be integers 0\.\.255"),
        ("sky -1,0,0\n", r"classes\.txt:1: colour -1,0,0 is out of range"),
        ("128,64,128\n", r"classes\.txt:1: colour 128,64,128 without a class name"),
        ("road\nsky\nroad 1,2,3\n", r"classes\.txt:3: class 'road' is already on line 1; names must be distinct"),
        ("# only a comment\n\n", r"classes\.txt: no class names \(expected one per line\)"),
    ],
)
def test_classes_file_errors_name_the_line(tmp_path, text, match):
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(DatasetError, match=rf"^{tmp_path}/{match}"):
        read_classes(path)


def test_rgb_masks_are_read_through_the_classes_file_colours(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("road 128,64,128\nsky #808080\ncar 64,0,128\n")
    road, sky, car, red = (128, 64, 128), (128, 128, 128), (64, 0, 128), (255, 0, 0)
    rgb = np.array([[road, road, sky, sky], [car, car, red, red], [road, sky, car, road]], dtype=np.uint8)
    _pair(tmp_path / "images", tmp_path / "masks", "a", rgb)
    ds = open_dataset("folder", tmp_path, classes_file=classes)
    # each colour -> its class's index; red is not in the file -> the ignore index
    np.testing.assert_array_equal(ds[0].target, [[0, 0, 1, 1], [2, 2, 255, 255], [0, 1, 2, 0]])
    assert validate_labels(ds, 3) == [
        LabelProblem("a", str(tmp_path / "masks/a.png"), "out_of_range",
                     f"2 pixels have colours that {classes} does not list (read as ignored): 255,0,0 (2 px)"),
    ]  # fmt: skip
    s = survey_labels(ds, 3)
    assert (s.class_pixels, s.ignore_pixels, s.images_with_class, s.total_pixels) == ((4, 3, 3), 2, (1, 1, 1), 12)
    # without colours an RGB mask is a problem, and the message says how colours would fix it
    classes.write_text("road\nsky\ncar\n")
    (problem,) = validate_labels(open_dataset("folder", tmp_path, classes_file=classes), 3)
    assert problem.kind == "rgb_mask"
    assert problem.detail.endswith("or give the colours in --classes (name R,G,B per line)")


# --- mask_values ---------------------------------------------------------------------------------


def test_mask_values_map_stored_values_to_classes(tmp_path):
    binary = np.array([[0, 0, 255, 255], [0, 255, 255, 128]], dtype=np.uint8)  # 128: an anti-aliased edge
    _pair(tmp_path / "images", tmp_path / "masks", "a", binary)
    ds = open_dataset("folder", tmp_path, mask_values=(0, 255))
    assert ds.mask_values == (0, 255) and ds.num_classes == 2
    # 0 -> class 0, 255 -> class 1, anything else -> the ignore index (255)
    np.testing.assert_array_equal(ds[0].target, [[0, 0, 1, 1], [0, 1, 1, 255]])
    assert [(p.kind, p.detail) for p in validate_labels(ds, 2)] == [
        (
            "out_of_range",
            "1 pixels have values that are not mask values (0,255) nor the ignore index (read as ignored): 128 (1 px)",
        )
    ]
    s = survey_labels(ds, 2)
    assert (s.class_pixels, s.ignore_pixels, s.images_with_class, s.total_pixels) == ((3, 4), 1, (1, 1), 8)
    # without the stray value, the mapped dataset validates clean; unmapped, the same masks are binary ones
    _save(tmp_path / "masks" / "a.png", np.where(binary == 128, 255, binary).astype(np.uint8))
    assert validate_labels(open_dataset("folder", tmp_path, mask_values="0,255"), 2) == []
    (problem,) = validate_labels(open_dataset("folder", tmp_path), 2)
    assert problem.kind == "binary_mask" and "pass --mask-values 0,255" in problem.detail
    # other values and a custom ignore index: CamVid-like 3 classes stored as 10, 20, 30; 99 is void
    _save(tmp_path / "masks" / "a.png", np.array([[10, 20, 30, 99], [30, 30, 10, 99]], dtype=np.uint8))
    ds = open_dataset("folder", tmp_path, mask_values=(10, 20, 30), ignore_index=99)
    np.testing.assert_array_equal(ds[0].target, [[0, 1, 2, 99], [2, 2, 0, 99]])
    assert validate_labels(ds, 3) == []


def test_mask_values_are_checked(tmp_path):
    _pair(tmp_path / "images", tmp_path / "masks", "a", np.zeros((2, 2), dtype=np.uint8))
    (tmp_path / "classes.txt").write_text("background\nforeground\nother\n")
    assert parse_mask_values("0,255") == (0, 255)
    for text in ("0,x", "0,256", "1,1", ""):
        with pytest.raises(ValueError, match=rf"^'{text}': "):
            parse_mask_values(text)
    with pytest.raises(
        DatasetError, match=r"^mask_values must be distinct integers 0\.\.255, one per class, got \(0, 0\)"
    ):
        open_dataset("folder", tmp_path, mask_values=(0, 0))
    with pytest.raises(DatasetError, match=r"^mask_values='0,x': mask values are integers 0\.\.255 separated"):
        open_dataset("folder", tmp_path, mask_values="0,x")
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'classes.txt'}: 3 classes, but mask_values gives 2 values"):
        open_dataset("folder", tmp_path, classes_file=tmp_path / "classes.txt", mask_values=(0, 255))
    with pytest.raises(DatasetError, match=r"^ignore_index 1 is one of the 2 classes mask_values defines"):
        open_dataset("folder", tmp_path, mask_values=(0, 255), ignore_index=1)


# --- survey_labels -------------------------------------------------------------------------------


def test_survey_counts_every_class_once_per_mask(tmp_path):
    m1 = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 255, 255], [0, 0, 0, 0]], dtype=np.uint8)
    m2 = np.ones((4, 4), dtype=np.uint8)
    m2[0, 0] = 255
    m3 = np.zeros((4, 4), dtype=np.uint8)
    m3[3, 2:] = 7  # out of range for 3 classes
    for name, mask in (("m1", m1), ("m2", m2), ("m3", m3)):
        _pair(tmp_path / "images", tmp_path / "masks", name, mask)
    (tmp_path / "classes.txt").write_text("road\nsky\nfence\n")
    ds = open_dataset("folder", tmp_path, classes_file=tmp_path / "classes.txt")
    calls = []
    s = survey_labels(ds, 3, progress=calls.append)
    assert calls == [1, 1, 1]
    # class 0: 8 (m1) + 14 (m3); class 1: 4 (m1) + 15 (m2); class 2 nowhere; ignored: 4 + 1;
    # the two 7s are neither a class nor ignored
    assert s.class_pixels == (22, 19, 0) and s.ignore_pixels == 5
    assert s.images_with_class == (2, 2, 0) and s.total_pixels == 48 and s.masks == 3
    where = str(tmp_path / "masks")
    assert s.problems == (
        LabelProblem("m3", str(tmp_path / "masks/m3.png"), "out_of_range",
                     "2 pixels have values outside the classes 0..2 that are not the ignore index 255: 7 (2 px)"),
        LabelProblem("(dataset)", where, "class_absent",
                     'class 2 "fence" never occurs in 3 masks: the model cannot learn it; '
                     "check --classes / --mask-values"),
    )  # fmt: skip
    assert validate_labels(ds, 3) == list(s.problems[:1])  # eval's check: no dataset-level kinds
    assert s.to_dict()["class_pixels"] == [22, 19, 0] and s.to_dict()["problems"][1]["kind"] == "class_absent"
    assert set(DATASET_PROBLEM_KINDS) == {"class_absent", "mostly_ignored"} <= set(PROBLEM_KINDS)


def test_survey_reports_a_mostly_ignored_dataset(tmp_path):
    mask = np.full((4, 4), 255, dtype=np.uint8)
    mask[0, :2] = 0
    mask[0, 2:] = 1  # 4 labelled pixels, 12 ignored
    for name in ("a", "b"):
        _pair(tmp_path / "images", tmp_path / "masks", name, mask)
    s = survey_labels(open_dataset("folder", tmp_path), 2)
    assert (s.class_pixels, s.ignore_pixels, s.total_pixels) == ((4, 4), 24, 32)
    assert s.problems == (
        LabelProblem("(dataset)", str(tmp_path / "masks"), "mostly_ignored",
                     "the ignore value 255 covers 75.0% of the 32 pixels of the masks, so most pixels are never "
                     "learned or scored; if 255 is really a class, pass --ignore-index with the real void value, "
                     "or map the stored values with --mask-values"),
    )  # fmt: skip
    assert validate_labels(open_dataset("folder", tmp_path), 2) == []


def test_survey_ade20k_counts_reduced_labels(ade):  # noqa: F811
    root, _ = ade
    s = survey_labels(open_dataset("ade20k", root), 150)
    # per 40x60 image: wall (stored 1) 20 rows x 50 columns, flag (stored 150) 40 x 10, "other" the rest
    assert (s.class_pixels[0], s.class_pixels[149], s.ignore_pixels, s.total_pixels) == (2000, 800, 2000, 4800)
    assert s.images_with_class[0] == 2 and sum(s.class_pixels) == 2800
    assert [p.kind for p in s.problems] == ["class_absent"] * 148


def test_survey_coco_voc_counts_the_decoded_targets(coco):  # noqa: F811
    root, _ = coco
    ds = open_dataset("coco-voc", root)
    s = survey_labels(ds, 21)
    expected = np.zeros(256, dtype=np.int64)
    seen = np.zeros(256, dtype=np.int64)
    for i in range(len(ds)):
        counts = np.bincount(ds[i].target.ravel(), minlength=256)
        expected += counts
        seen += counts > 0
    assert s.class_pixels == tuple(int(c) for c in expected[:21]) and s.ignore_pixels == int(expected[255])
    assert s.images_with_class == tuple(int(c) for c in seen[:21]) and s.masks == 4
    assert [p for p in s.problems if p.kind != "class_absent"] == validate_labels(ds, 21) == []
