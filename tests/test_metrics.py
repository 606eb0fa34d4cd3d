import math
import warnings
from fractions import Fraction as F

import numpy as np
import pytest
import torch

from seglens import metrics
from seglens.metrics import (
    ABSENT_RULE,
    SIZE_BUCKETS,
    BoundaryAccuracy,
    BucketStats,
    Confusion,
    ConfusionMatrix,
    SizeRecall,
    boundary_band,
    confusion_matrix,
    image_scores,
    regions,
    scores,
    top_confusions,
)

I = 255  # VOC's ignore / void label

# 3 classes; 255 and 7 (out of range for n=3) are skipped, leaving 10 valid pixels.
TARGET = np.array(
    [[0, 0, 1, 1],
     [0, 2, 1, I],
     [2, 2, 2, 7]], dtype=np.uint8)  # fmt: skip
PRED = np.array(
    [[0, 1, 1, 1],
     [0, 2, 0, 0],
     [2, 1, 2, 0]], dtype=np.uint8)  # fmt: skip
# (gt, pred) pairs: row 0 (0,0) (0,1) (1,1) (1,1); row 1 (0,0) (2,2) (1,0); row 2 (2,2) (2,1) (2,2)
MATRIX = np.array(
    [[2, 1, 0],
     [1, 2, 0],
     [0, 1, 3]])  # fmt: skip


def approx(x):
    return pytest.approx(float(x), rel=1e-15, abs=0)


def torch_reference(target: np.ndarray, pred: np.ndarray, n: int):
    """torchvision references/segmentation/utils.py ConfusionMatrix.update + compute, verbatim."""
    a, b = torch.from_numpy(target.astype(np.int64)), torch.from_numpy(pred.astype(np.int64))
    mat = torch.zeros((n, n), dtype=torch.int64)
    k = (a >= 0) & (a < n)
    inds = n * a[k].to(torch.int64) + b[k]
    mat += torch.bincount(inds, minlength=n**2).reshape(n, n)
    h = mat.float()
    acc_global = torch.diag(h).sum() / h.sum()
    acc = torch.diag(h) / h.sum(1)
    iu = torch.diag(h) / (h.sum(1) + h.sum(0) - torch.diag(h))
    return mat.numpy(), acc_global.item(), acc.numpy(), iu.numpy()


# --- confusion matrix ------------------------------------------------------------------------


def test_confusion_matrix_cells_skip_ignore_and_out_of_range_targets():
    mat = confusion_matrix(TARGET, PRED, 3)
    np.testing.assert_array_equal(mat, MATRIX)
    assert mat.dtype == np.int64
    assert mat.sum() == 10  # 12 pixels minus the 255 and the 7


def test_confusion_matrix_skips_negative_targets():
    target = np.array([[-1, 0], [1, 1]])
    pred = np.array([[1, 0], [0, 1]])
    np.testing.assert_array_equal(confusion_matrix(target, pred, 2), [[1, 0], [1, 1]])


def test_confusion_matrix_accepts_batches():
    batch_t, batch_p = np.stack([TARGET, TARGET]), np.stack([PRED, PRED])
    np.testing.assert_array_equal(confusion_matrix(batch_t, batch_p, 3), 2 * MATRIX)


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match=r"target shape \(3, 4\) and pred shape \(4, 3\)"):
        confusion_matrix(TARGET, PRED.T, 3)
    with pytest.raises(ValueError, match=r"pred contains class 3, outside \[0, 3\)"):
        confusion_matrix(TARGET, np.full_like(PRED, 3), 3)
    with pytest.raises(ValueError, match=r"pred contains class -1"):
        confusion_matrix(TARGET.astype(int), np.full(TARGET.shape, -1), 3)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        confusion_matrix(TARGET, PRED, 0)
    with pytest.raises(ValueError, match="pred must be an integer array"):
        confusion_matrix(TARGET, PRED.astype(float), 3)


# --- scores ----------------------------------------------------------------------------------


def test_scores_exact():
    s = scores(MATRIX)
    # diag (2, 2, 3), gt row sums (3, 3, 4), pred column sums (3, 4, 3), total 10
    np.testing.assert_array_equal(s.gt_pixels, [3, 3, 4])
    np.testing.assert_array_equal(s.pred_pixels, [3, 4, 3])
    assert s.gt_pixels.dtype == s.pred_pixels.dtype == np.int64
    np.testing.assert_array_equal(s.present, [True, True, True])
    assert s.pixel_acc == approx(F(7, 10))
    # acc = (2/3, 2/3, 3/4); mean = (8/12 + 8/12 + 9/12) / 3 = 25/36
    assert s.acc.tolist() == [approx(F(2, 3)), approx(F(2, 3)), approx(F(3, 4))]
    assert s.mean_acc == approx(F(25, 36))
    # iou = 2/(3+3-2) = 1/2, 2/(3+4-2) = 2/5, 3/(4+3-3) = 3/4; mean = (10 + 8 + 15)/20/3 = 11/20
    assert s.iou.tolist() == [approx(F(1, 2)), approx(F(2, 5)), approx(F(3, 4))]
    assert s.miou == approx(F(11, 20))
    # fwiou = (3 * 1/2 + 3 * 2/5 + 4 * 3/4) / 10 = (15/10 + 12/10 + 30/10) / 10 = 57/100
    assert s.fwiou == approx(F(57, 100))
    # dice = 2*2/(3+3) = 2/3, 2*2/(3+4) = 4/7, 2*3/(4+3) = 6/7; mean = (14 + 12 + 18)/21/3 = 44/63
    assert s.dice.tolist() == [approx(F(2, 3)), approx(F(4, 7)), approx(F(6, 7))]
    assert s.mean_dice == approx(F(44, 63))


def test_image_scores_is_scores_of_the_matrix():
    s = image_scores(TARGET, PRED, 3)
    assert s.miou == scores(MATRIX).miou
    assert s.pixel_acc == scores(MATRIX).pixel_acc


def test_absent_class_is_left_out_and_predicted_only_class_counts_zero():
    # 4 classes: class 2 only predicted, class 3 nowhere.
    target = np.array([[0, 0, 1], [1, 1, 0]])
    pred = np.array([[0, 2, 1], [1, 0, 0]])
    # pairs (0,0) (0,2) (1,1) (1,1) (1,0) (0,0)
    mat = confusion_matrix(target, pred, 4)
    np.testing.assert_array_equal(mat, [[2, 0, 1, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    s = scores(mat)
    # gt (3, 3, 0, 0), pred (3, 2, 1, 0), diag (2, 2, 0, 0)
    np.testing.assert_array_equal(s.present, [True, True, True, False])
    assert s.iou[:3].tolist() == [approx(F(1, 2)), approx(F(2, 3)), 0.0]  # 2/4, 2/3, 0/(0+1-0)
    assert math.isnan(s.iou[3])
    assert s.miou == approx(F(7, 18))  # (1/2 + 2/3 + 0) / 3 = (7/6) / 3
    assert s.dice[:3].tolist() == [approx(F(2, 3)), approx(F(4, 5)), 0.0]  # 4/6, 4/5, 0/1
    assert math.isnan(s.dice[3])
    assert s.mean_dice == approx(F(22, 45))  # (10/15 + 12/15 + 0) / 3
    assert s.acc[:2].tolist() == [approx(F(2, 3)), approx(F(2, 3))]
    assert np.isnan(s.acc[2:]).all()  # no ground truth for classes 2, 3
    assert s.mean_acc == approx(F(2, 3))
    assert s.pixel_acc == approx(F(2, 3))  # 4 / 6
    assert s.fwiou == approx(F(7, 12))  # (3 * 1/2 + 3 * 2/3) / 6 = (7/2) / 6
    # torchvision's iu.mean() is NaN here; its IoUs agree class by class.
    _, _, _, iu = torch_reference(target, pred, 4)
    assert math.isnan(iu.mean())
    np.testing.assert_allclose(iu[:3], s.iou[:3], rtol=1e-6)
    assert "absent from both" in ABSENT_RULE and "IoU 0" in ABSENT_RULE


def test_empty_matrix_gives_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = scores(np.zeros((3, 3), dtype=np.int64))
    for value in (s.pixel_acc, s.mean_acc, s.miou, s.fwiou, s.mean_dice):
        assert math.isnan(value)
    assert not s.present.any()
    assert np.isnan(s.iou).all() and np.isnan(s.acc).all() and np.isnan(s.dice).all()


def test_scores_arrays_are_read_only_and_dataclass_frozen():
    s = scores(MATRIX)
    with pytest.raises(ValueError, match="read-only"):
        s.iou[0] = 1.0
    with pytest.raises(AttributeError):
        s.miou = 1.0  # type: ignore[misc]


def test_scores_errors():
    with pytest.raises(ValueError, match=r"square \(n, n\).*\(2, 3\)"):
        scores(np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match="non-negative integer"):
        scores(np.array([[1, -1], [0, 1]]))
    with pytest.raises(ValueError, match="non-negative integer"):
        scores(np.eye(2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torchvision_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = 6
    target = rng.integers(0, n, size=(4, 37, 53)).astype(np.uint8)
    target[rng.random(target.shape) < 0.1] = 255
    pred = np.where(rng.random(target.shape) < 0.6, target % n, rng.integers(0, n, size=target.shape))
    pred = pred.astype(np.int64)
    mat, acc_global, acc, iu = torch_reference(target, pred, n)
    ours = confusion_matrix(target, pred, n)
    np.testing.assert_array_equal(ours, mat)
    s = scores(ours)
    assert s.present.all()  # so torchvision's iu.mean() is defined and must agree
    assert s.pixel_acc == pytest.approx(acc_global, rel=1e-6)
    np.testing.assert_allclose(s.acc, acc, rtol=1e-6)
    np.testing.assert_allclose(s.iou, iu, rtol=1e-6)
    assert s.miou == pytest.approx(float(iu.mean()), rel=1e-6)
    assert s.mean_acc == pytest.approx(float(acc.mean()), rel=1e-6)


def test_matches_torchvision_reference_with_absent_classes():
    rng = np.random.default_rng(5)
    n = 8  # classes 5..7 never occur; 4 only in the prediction
    target = rng.integers(0, 4, size=(40, 30))
    pred = rng.integers(0, 5, size=(40, 30))
    _, _, _, iu = torch_reference(target, pred, n)
    s = image_scores(target, pred, n)
    np.testing.assert_array_equal(s.present, [True] * 5 + [False] * 3)
    np.testing.assert_array_equal(np.isnan(s.iou), np.isnan(iu))
    np.testing.assert_allclose(s.iou[:5], iu[:5], rtol=1e-6)
    assert s.iou[4] == 0.0
    assert s.miou == pytest.approx(float(np.nanmean(iu)), rel=1e-6)


# --- accumulator -----------------------------------------------------------------------------


def test_accumulator_equals_one_big_matrix_and_merges():
    rng = np.random.default_rng(0)
    targets = [rng.integers(0, 5, size=(7, 9)) for _ in range(6)]
    preds = [rng.integers(0, 4, size=(7, 9)) for _ in range(6)]
    for t in targets:
        t[0, 0] = 255
    big = confusion_matrix(np.stack(targets), np.stack(preds), 4)
    one = ConfusionMatrix(4)
    for t, p in zip(targets, preds):
        one.update(t, p)
    np.testing.assert_array_equal(one.matrix, big)
    first, second = ConfusionMatrix(4), ConfusionMatrix(4)
    for t, p in zip(targets[:2], preds[:2]):
        first.update(t, p)
    for t, p in zip(targets[2:], preds[2:]):
        second.update(t, p)
    first.merge(second)
    np.testing.assert_array_equal(first.matrix, big)
    np.testing.assert_array_equal(second.matrix, confusion_matrix(np.stack(targets[2:]), np.stack(preds[2:]), 4))


def test_accumulator_matrix_is_a_copy_and_starts_at_zero():
    acc = ConfusionMatrix(3)
    np.testing.assert_array_equal(acc.matrix, np.zeros((3, 3)))
    acc.update(TARGET, PRED)
    m = acc.matrix
    m[0, 0] = 100
    np.testing.assert_array_equal(acc.matrix, MATRIX)
    assert acc.num_classes == 3


def test_accumulator_errors():
    with pytest.raises(ValueError, match="num_classes=3"):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        ConfusionMatrix(0)
    acc = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="outside"):
        acc.update(TARGET, PRED)  # PRED holds class 2
    np.testing.assert_array_equal(acc.matrix, np.zeros((2, 2)))  # nothing added on failure


# --- top confusions --------------------------------------------------------------------------


def test_top_confusions_order_and_fractions():
    mat = np.array(
        [[50, 3, 7, 0],
         [2, 10, 0, 7],
         [0, 0, 0, 0],
         [1, 3, 0, 9]])  # fmt: skip
    # row sums 60, 19, 0, 13; off-diagonal cells: 7 at (0,2) and (1,3), 3 at (0,1) and (3,1), 2, 1
    top = top_confusions(mat, k=10)
    assert top == [
        Confusion(gt=0, pred=2, pixels=7, fraction_of_gt=7 / 60),
        Confusion(gt=1, pred=3, pixels=7, fraction_of_gt=7 / 19),
        Confusion(gt=0, pred=1, pixels=3, fraction_of_gt=3 / 60),
        Confusion(gt=3, pred=1, pixels=3, fraction_of_gt=3 / 13),
        Confusion(gt=1, pred=0, pixels=2, fraction_of_gt=2 / 19),
        Confusion(gt=3, pred=0, pixels=1, fraction_of_gt=1 / 13),
    ]
    assert top_confusions(mat, k=3) == top[:3]
    assert top_confusions(mat, k=0) == []


def test_top_confusions_ties_and_default_k():
    # MATRIX: off-diagonal 1 at (0,1), (1,0), (2,1); row sums 3, 3, 4
    assert top_confusions(MATRIX) == [
        Confusion(0, 1, 1, 1 / 3),
        Confusion(1, 0, 1, 1 / 3),
        Confusion(2, 1, 1, 1 / 4),
    ]
    assert top_confusions(np.diag([4, 5])) == []
    with pytest.raises(ValueError, match="k must be a non-negative integer"):
        top_confusions(MATRIX, k=-1)


# --- regions and size recall -----------------------------------------------------------------


def _cells(mask: np.ndarray) -> set[tuple[int, int]]:
    return {(int(r), int(c)) for r, c in zip(*np.nonzero(mask))}


def test_regions_connected_components():
    target = np.array(
        [[1, 1, 0, 2],
         [1, 0, 0, 0],
         [0, 0, 1, I],
         [2, 0, I, 1]])  # fmt: skip
    found = regions(target, 3)
    # class 1: the top-left blob, and (2,2)-(3,3) touching diagonally = one region under
    # 8-connectivity; class 2: two separate pixels = two regions; background 0 and 255: none.
    assert [c for c, _ in found] == [1, 1, 2, 2]
    assert [_cells(m) for _, m in found] == [
        {(0, 0), (0, 1), (1, 0)},
        {(2, 2), (3, 3)},
        {(0, 3)},
        {(3, 0)},
    ]
    assert all(m.dtype == bool and m.shape == (4, 4) for _, m in found)


def test_regions_ignore_and_out_of_range_are_not_objects():
    target = np.array([[1, I, 1], [9, 9, 9]])
    # the 255 column splits class 1 into two regions; 9 is outside [0, 3)
    assert [(c, _cells(m)) for c, m in regions(target, 3)] == [(1, {(0, 0)}), (1, {(0, 2)})]
    assert regions(np.zeros((3, 3), dtype=int), 3) == []


def test_regions_from_instances_drop_ignored_pixels():
    target = np.array([[1, 1, I], [1, 0, 0]])
    first = np.array([[1, 1, 1], [0, 0, 0]], dtype=bool)  # covers the 255 pixel
    second = np.array([[0, 0, 0], [1, 0, 0]], dtype=np.uint8)  # pycocotools masks are uint8
    wholly_ignored = np.array([[0, 0, 1], [0, 0, 0]], dtype=bool)
    found = regions(target, 3, instances=[(1, first), (2, second), (1, wholly_ignored)])
    assert [(c, _cells(m)) for c, m in found] == [(1, {(0, 0), (0, 1)}), (2, {(1, 0)})]
    with pytest.raises(ValueError, match=r"instance 0: mask shape \(3, 2\) differs"):
        regions(target, 3, instances=[(1, first.T)])
    with pytest.raises(ValueError, match=r"instance 0: class 3 is outside \[0, 3\)"):
        regions(target, 3, instances=[(3, first)])


def test_size_buckets_are_coco_thresholds():
    assert SIZE_BUCKETS == (("small", 0, 1024), ("medium", 1024, 9216), ("large", 9216, None))


def _prefix_region(area: int, hit: int) -> tuple[np.ndarray, np.ndarray]:
    """A 100x100 map whose first `area` pixels in row-major order are class 1 (one connected
    region) and whose prediction is class 1 on the first `hit` of them."""
    target = np.zeros(100 * 100, dtype=np.uint8)
    target[:area] = 1
    pred = np.zeros(100 * 100, dtype=np.uint8)
    pred[:hit] = 1
    return target.reshape(100, 100), pred.reshape(100, 100)


def test_size_recall_bucket_thresholds():
    recall = SizeRecall()
    for area, hit in [(1023, 1023), (1024, 512), (9215, 0), (9216, 9216)]:
        recall.update(*_prefix_region(area, hit), num_classes=2)
    assert recall.result() == {
        "small": BucketStats(regions=1, pixels=1023, hit_pixels=1023, pixel_recall=1.0, mean_region_recall=1.0),
        # 1024 + 9215 = 10239 pixels, 512 hits; region recalls 512/1024 = 1/2 and 0 -> mean 1/4
        "medium": BucketStats(
            regions=2, pixels=10239, hit_pixels=512, pixel_recall=512 / 10239, mean_region_recall=0.25
        ),
        "large": BucketStats(regions=1, pixels=9216, hit_pixels=9216, pixel_recall=1.0, mean_region_recall=1.0),
    }


def test_size_recall_small_map_counts():
    target = np.array(
        [[1, 1, 0, 2],
         [1, 0, 0, 2],
         [0, 0, 0, I],
         [0, 1, 1, 0]])  # fmt: skip
    pred = np.array(
        [[1, 0, 0, 2],
         [1, 0, 2, 1],
         [0, 0, 0, 2],
         [0, 0, 0, 0]])  # fmt: skip
    # regions: class 1 {(0,0),(0,1),(1,0)} hits 2 of 3; class 1 {(3,1),(3,2)} hits 0 of 2;
    # class 2 {(0,3),(1,3)} hits 1 of 2. pixels 7, hits 3, mean recall (2/3 + 0 + 1/2) / 3 = 7/18
    recall = SizeRecall()
    recall.update(target, pred, num_classes=3)
    result = recall.result()
    small = result["small"]
    assert (small.regions, small.pixels, small.hit_pixels) == (3, 7, 3)
    assert small.pixel_recall == approx(F(3, 7))
    assert small.mean_region_recall == approx(F(7, 18))
    for name in ("medium", "large"):
        assert (result[name].regions, result[name].pixels, result[name].hit_pixels) == (0, 0, 0)
        assert math.isnan(result[name].pixel_recall) and math.isnan(result[name].mean_region_recall)


def test_size_recall_with_instances_measures_area_after_dropping_ignore():
    target, pred = _prefix_region(1024, 1024)
    mask = target == 1
    target[0, 0] = I  # one ignored pixel inside the instance: area 1023 -> small
    recall = SizeRecall()
    recall.update(target, pred, num_classes=2, instances=[(1, mask)])
    recall.update(target, pred, num_classes=2, instances=[])  # an image without instances
    result = recall.result()
    assert (result["small"].regions, result["small"].pixels, result["small"].hit_pixels) == (1, 1023, 1023)
    assert result["medium"].regions == 0
    # without instances the component is the same 1023 valid pixels
    components = SizeRecall()
    components.update(target, pred, num_classes=2)
    assert components.result() == result


def test_size_recall_errors():
    with pytest.raises(ValueError, match=r"target shape \(3, 4\) and pred shape \(4, 3\)"):
        SizeRecall().update(TARGET, PRED.T, num_classes=3)
    with pytest.raises(ValueError, match=r"\(H, W\) label maps"):
        SizeRecall().update(np.stack([TARGET]), np.stack([PRED]), num_classes=3)


# --- boundaries ------------------------------------------------------------------------------

# 7x7: background 0 with a 255 (void) outline around a single class-1 pixel, as VOC draws objects.
RING = np.array(
    [[0, 0, 0, 0, 0, 0, 0],
     [0, 0, 0, 0, 0, 0, 0],
     [0, 0, I, I, I, 0, 0],
     [0, 0, I, 1, I, 0, 0],
     [0, 0, I, I, I, 0, 0],
     [0, 0, 0, 0, 0, 0, 0],
     [0, 0, 0, 0, 0, 0, 0]], dtype=np.uint8)  # fmt: skip


def test_boundary_band_ignore_outline():
    # Boundary pixels: the centre (all 4-neighbours void) and the 12 zeros 4-adjacent to the ring
    # (not the ring's diagonal corners like (1,1)). Width 1 adds their 4-neighbours (distance 1,
    # not sqrt 2); void pixels are never in the band.
    T, _ = True, False
    expected = np.array(
        [[_, _, T, T, T, _, _],
         [_, T, T, T, T, T, _],
         [T, T, _, _, _, T, T],
         [T, T, _, T, _, T, T],
         [T, T, _, _, _, T, T],
         [_, T, T, T, T, T, _],
         [_, _, T, T, T, _, _]])  # fmt: skip
    band = boundary_band(RING, 1)
    assert band.dtype == bool
    np.testing.assert_array_equal(band, expected)
    # The image corners are sqrt(1 + 4) = 2.24 from the nearest boundary pixels (1,2) and (2,1):
    # outside the band at width 2, inside at width 3; every other valid pixel is within 2.
    corners = np.zeros((7, 7), dtype=bool)
    corners[[0, 0, 6, 6], [0, 6, 0, 6]] = True
    np.testing.assert_array_equal(boundary_band(RING, 2), (RING != I) & ~corners)
    np.testing.assert_array_equal(boundary_band(RING, 3), RING != I)


def test_boundary_band_two_regions():
    target = np.array([[1, 1, 1, 0, 0, 0]] * 3)
    # boundary pixels: columns 2 and 3; width 1 adds columns 1 and 4; image border is no boundary
    np.testing.assert_array_equal(boundary_band(target, 1), np.array([[0, 1, 1, 1, 1, 0]] * 3, dtype=bool))
    np.testing.assert_array_equal(boundary_band(target, 2), np.ones((3, 6), dtype=bool))


def test_boundary_band_no_boundary_and_errors():
    np.testing.assert_array_equal(boundary_band(np.zeros((3, 3), dtype=int), 1), np.zeros((3, 3), dtype=bool))
    np.testing.assert_array_equal(boundary_band(np.full((3, 3), I), 1), np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        boundary_band(RING, 0)
    with pytest.raises(ValueError, match=r"\(H, W\) integer label map"):
        boundary_band(RING.astype(float), 1)


def test_boundary_accuracy_counts():
    acc = BoundaryAccuracy()
    # valid pixels 49 - 8 void = 41; band 3 + 5 + 4 + 5 + 4 + 5 + 3 = 29; interior 41 - 29 = 12
    acc.update(RING, np.zeros_like(RING), width=1)  # wrong only at the class-1 centre (in the band)
    r = acc.result()
    assert (r.width, r.band_pixels, r.band_correct, r.interior_pixels, r.interior_correct) == (1, 29, 28, 12, 12)
    assert r.band_acc == approx(F(28, 29))
    assert r.interior_acc == 1.0
    pred = RING.copy()
    pred[0, 0] = 1  # interior corner wrong
    pred[2, 2] = 5  # void pixels are never counted
    acc.update(RING, pred, width=1)
    r = acc.result()
    # band 29 + 29, correct 28 + 29; interior 12 + 12, correct 12 + 11
    assert (r.band_pixels, r.band_correct, r.interior_pixels, r.interior_correct) == (58, 57, 24, 23)
    assert r.band_acc == approx(F(57, 58))
    assert r.interior_acc == approx(F(23, 24))


def test_boundary_accuracy_empty_and_width_mismatch():
    acc = BoundaryAccuracy()
    r = acc.result()
    assert r.width is None and r.band_pixels == 0 and r.interior_pixels == 0
    assert math.isnan(r.band_acc) and math.isnan(r.interior_acc)
    acc.update(RING, RING, width=2)
    with pytest.raises(ValueError, match="width 1 differs from the width 2"):
        acc.update(RING, RING, width=1)
    with pytest.raises(ValueError, match=r"target shape \(7, 7\) and pred shape \(7, 6\)"):
        acc.update(RING, RING[:, :6], width=2)


def test_module_is_pure_numpy():
    source = open(metrics.__file__, encoding="utf-8").read()
    assert "import torch" not in source and "print(" not in source and "open(" not in source
    assert set(metrics.__all__) <= set(dir(metrics))
