"""seglens.refine on hand-made label and probability maps with exact expected labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from seglens.refine import Refine, guided_filter, parse_refine, refine_labels, remove_small_regions


def test_small_regions_take_the_label_of_their_border():
    labels = np.zeros((10, 12), np.uint8)
    labels[:, 6:] = 2  # two big halves
    labels[2:4, 2:4] = 1  # a 4-pixel speck inside class 0
    labels[7, 9] = 1  # a 1-pixel speck inside class 2
    labels[4:6, 6:8] = 3  # 4 pixels at the 0|2 border: its ring has 4 pixels of 0 and 8 of 2
    expected = np.zeros((10, 12), np.uint8)
    expected[:, 6:] = 2
    np.testing.assert_array_equal(remove_small_regions(labels, min_size=5), expected)
    only_the_dot = labels.copy()
    only_the_dot[7, 9] = 2
    np.testing.assert_array_equal(remove_small_regions(labels, min_size=4), only_the_dot)  # 4 is not < 4
    np.testing.assert_array_equal(remove_small_regions(labels, min_size=1), labels)  # nothing under 1 pixel


def test_small_regions_fraction_ties_and_order():
    labels = np.zeros((20, 20), np.uint8)  # 400 pixels
    labels[0:2, 0:2] = 1  # 4 px in the corner: its ring is 5 pixels of 0
    assert remove_small_regions(labels, min_size=0.011)[0:2, 0:2].max() == 0  # 4 < 4.4 pixels
    assert remove_small_regions(labels, min_size=0.01)[0:2, 0:2].min() == 1  # 4 is not < 4
    tie = np.array([[1, 1, 2, 2], [1, 0, 0, 2], [1, 1, 2, 2]], np.uint8)  # the 0s: ring of three 1s, three 2s
    assert remove_small_regions(tie, min_size=3)[1].tolist() == [1, 1, 1, 2]  # a tie goes to the lower label
    # smallest first: the 1-pixel 3 joins the 2-pixel 4 region's label before that region is handled
    chain = np.zeros((5, 7), np.uint8)
    chain[2, 2:4] = 4
    chain[2, 4] = 3
    out = remove_small_regions(chain, min_size=3)
    assert out.tolist() == np.zeros((5, 7), np.uint8).tolist()
    whole = np.full((3, 3), 5, np.uint8)
    assert remove_small_regions(whole, min_size=100).tolist() == whole.tolist()  # no border: stays


def test_guided_filter_matches_its_definition():
    rng = np.random.default_rng(0)
    guide = rng.random((30, 40)).astype(np.float32)
    src = rng.random((2, 30, 40)).astype(np.float32)
    r, eps = 3, 0.01
    out = guided_filter(guide, src, r, eps)

    def box(x):
        return ndimage.uniform_filter(x.astype(np.float64), size=2 * r + 1, mode="reflect")

    for c in range(2):  # He et al., Algorithm 1, in float64
        mi, mp = box(guide), box(src[c])
        a = (box(guide * src[c]) - mi * mp) / (box(guide * guide) - mi * mi + eps)
        b = mp - a * mi
        np.testing.assert_allclose(out[c], box(a) * guide + box(b), atol=1e-5)


def test_guided_filter_agrees_with_opencv_contrib():
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "ximgproc"):
        pytest.skip("opencv-contrib's ximgproc is not installed")
    rng = np.random.default_rng(1)
    guide = rng.random((25, 31)).astype(np.float32)
    src = rng.random((25, 31)).astype(np.float32)
    ours = guided_filter(guide, src, 4, 0.02)
    theirs = cv2.ximgproc.guidedFilter(guide, src, 4, 0.02)
    np.testing.assert_allclose(ours[5:-5, 5:-5], theirs[5:-5, 5:-5], atol=1e-4)  # borders: other padding


def test_guided_moves_a_blurred_boundary_to_the_image_edge():
    """A step edge in the image at column 10; the network is unsure around it (P = 0.4 on
    columns 8-12) and puts the boundary at column 13. The guided filter moves it to the edge."""
    h, w = 8, 24
    image = np.zeros((h, w, 3), np.uint8)
    image[:, 10:] = 255
    p1 = np.full(w, 0.1, np.float32)
    p1[8:13], p1[13:] = 0.4, 0.9
    probs = np.stack([np.tile(1 - p1, (h, 1)), np.tile(p1, (h, 1))])
    labels = probs.argmax(0).astype(np.uint8)
    assert labels[0].tolist() == [0] * 13 + [1] * 11
    for spelling in ("guided=4:0.0001", "guided", "guided=8:0.001"):
        out = refine_labels(labels, parse_refine(spelling), probabilities=probs, image=image)
        np.testing.assert_array_equal(out, np.tile([0] * 10 + [1] * 14, (h, 1)))


def test_parse_refine():
    assert parse_refine(None) == () and parse_refine("") == () and parse_refine("none") == ()
    assert parse_refine("small") == (Refine("small"),)
    assert parse_refine("small=200,guided") == (Refine("guided"), Refine("small", min_size=200.0))  # guided first
    assert parse_refine("guided=4:0.01") == (Refine("guided", radius=4, eps=0.01),)
    assert str(Refine("small", min_size=200)) == "small=200" and str(Refine("guided")) == "guided=8:0.001"
    for bad in ("crf", "small=-1", "guided=0", "guided=x", "small=abc"):
        with pytest.raises(ValueError, match="use small"):
            parse_refine(bad)
    with pytest.raises(ValueError, match="needs the class probabilities"):
        refine_labels(np.zeros((2, 2), np.uint8), parse_refine("guided"))


# --- in the Segmenter, seglens segment and seglens eval -------------------------------------------


def test_segmenter_refines_its_labels(photos, weights_file):
    import torch

    from seglens import Segmenter

    plain = Segmenter("lraspp_mobilenet_v3_large", weights=weights_file("lraspp_mobilenet_v3_large"), device="cpu")
    small = Segmenter(plain.loaded, device="cpu", refine="small=0.01")
    guided = Segmenter(plain.loaded, device="cpu", refine="guided=4:0.001")
    image = photos[1]
    base = plain(image).labels
    expected_small = remove_small_regions(base, 0.01)
    assert (expected_small != base).any()  # the step does something on this photo
    np.testing.assert_array_equal(small(image).labels, expected_small)
    x = plain.preprocess(image)[None]
    logits = plain.logits(x).logits[0]
    up = torch.nn.functional.interpolate(logits[None], size=(image.height, image.width), mode="bilinear")[0]
    probs = torch.softmax(up, 0).numpy()
    expected_guided = refine_labels(base, parse_refine("guided=4:0.001"), probabilities=probs, image=image)
    assert (expected_guided != base).any()
    np.testing.assert_array_equal(guided(image).labels, expected_guided)
    np.testing.assert_array_equal(
        guided.labels_from_logits(logits, (image.height, image.width), image), expected_guided
    )
    with pytest.raises(Exception, match="tiling"):
        Segmenter(plain.loaded, device="cpu", refine="guided", tile=256)


def test_segment_and_eval_record_and_apply_refine(tmp_path, weights_file):
    import seglens
    from seglens.metrics import ConfusionMatrix
    from tests._shapes import write_shapes

    root = tmp_path / "data"
    write_shapes(root / "val", 6, seed=3)
    name = "lraspp_mobilenet_v3_large"
    w = weights_file(name)
    summary = seglens.segment(root / "val" / "images", tmp_path / "out", model=name, weights=w, refine="small=0.02")
    assert summary.settings["refine"] == "small=0.02"
    with pytest.raises(ValueError, match="refine 'crf'"):
        seglens.segment(root / "val" / "images", tmp_path / "out2", model=name, weights=w, refine="crf")
    kw = {"images": root / "val" / "images", "masks": root / "val" / "masks", "model": name, "weights": w}
    refined = seglens.evaluate("folder", refine="small=0.02", worst=0, **kw)
    assert refined.settings.refine == "small=0.02" and refined.to_dict()["refine"] == "small=0.02"
    plain_seg = seglens.Segmenter(name, weights=w, device="cpu")
    dataset = seglens.datasets.open_dataset("folder", images=kw["images"], masks=kw["masks"])
    cm = ConfusionMatrix(21)
    for i in range(len(dataset)):
        sample = dataset[i]
        cm.update(sample.target, remove_small_regions(plain_seg(sample.image).labels, 0.02))
    np.testing.assert_array_equal(refined.confusion_matrix, cm.matrix)
    assert "refine" not in seglens.evaluate("folder", worst=0, **kw).to_dict()
