import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.models import get_model_weights

from seglens import Segmenter
from seglens.inference import resolve_device, upsample_argmax
from tests.conftest import calibrated_model, varied

SMALL = "lraspp_mobilenet_v3_large"


def plain_torchvision(model, name, image):
    """The reference: weights.transforms() -> model -> bilinear upsample to the original size -> argmax."""
    x = get_model_weights(name).DEFAULT.transforms()(image).unsqueeze(0)
    with torch.no_grad():
        out = model(x)["out"]
    up = F.interpolate(out, size=(image.height, image.width), mode="bilinear", align_corners=False)
    return up.argmax(1)[0].numpy().astype(np.uint8)


@pytest.mark.parametrize("name", [SMALL, "deeplabv3_resnet50"])
def test_labels_equal_plain_torchvision_on_real_photographs(name, photos, weights_file):
    reference = calibrated_model(name)  # the same weights weights_file() saved
    exact = Segmenter(name, weights=weights_file(name), device="cpu", channels_last=False)
    fast = Segmenter(name, weights=weights_file(name), device="cpu")  # default: channels_last
    for image in photos:
        expected = plain_torchvision(reference, name, image)
        assert varied(expected)  # the comparison is not between two constant maps
        result = exact(image)
        assert result.labels.dtype == np.uint8
        assert result.labels.shape == (image.height, image.width)  # not the seed's fixed 513x513
        np.testing.assert_array_equal(result.labels, expected)
        # NHWC convolutions sum in another order: equal up to float noise near class ties
        agreement = (fast(image).labels == expected).mean()
        assert agreement >= 0.9999, agreement


def test_batches_of_mixed_sizes_equal_one_at_a_time(photos, weights_file):
    one = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu", batch_size=1)
    many = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu", batch_size=3)
    # Two same-size images share a batch; the others run at their own sizes.
    images = [photos[0], photos[1], photos[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT), photos[2]]
    singles = [one(im).labels for im in images]
    batched = many(images)
    assert [r.labels.shape for r in batched] == [(512, 512), (300, 451), (512, 512), (400, 600)]
    for a, b in zip(singles, batched):
        # batched convolutions may sum in another order; labels agree to within float noise
        assert (a == b.labels).mean() > 0.9999


def test_upsample_argmax_chunked_equals_whole():
    g = torch.Generator().manual_seed(0)
    # Logits as the models make them: 1/8 of a 520-pixel short side (PyTorch vectorises tiny
    # inputs, under ~40 pixels, across channels, where a channel slice can differ in the last bit).
    # Integer values make ties frequent: both paths must break them toward the lower class.
    logits = torch.randint(0, 4, (21, 65, 87), generator=g).float()
    whole = F.interpolate(logits[None], size=(520, 700), mode="bilinear", align_corners=False)[0].argmax(0)
    per_class = 520 * 700 * 4
    for budget in (1, per_class * 2, per_class * 5, 10**10):  # 1, 2, 5 and all classes per chunk
        assert torch.equal(upsample_argmax(logits, (520, 700), budget_bytes=budget), whole)


@pytest.mark.parametrize("size", [(1, 1), (37, 211), (211, 37)])
def test_mask_has_the_inputs_exact_size(size, weights_file):
    seg = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu")
    image = Image.new("RGB", size, (120, 30, 200))
    assert seg(image).labels.shape == (size[1], size[0])


def test_inputs_as_path_array_and_other_modes(tmp_path, photos, weights_file):
    seg = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu")
    path = tmp_path / "a.png"
    photos[1].save(path)
    from_path = seg(str(path)).labels
    np.testing.assert_array_equal(from_path, seg(np.asarray(photos[1])).labels)
    np.testing.assert_array_equal(from_path, seg(path).labels)
    gray = seg(photos[1].convert("L"))  # converted to RGB deliberately
    assert gray.labels.shape == (300, 451)
    with pytest.raises(TypeError, match=r"arrays must be \(H, W\) or \(H, W, 3\) uint8"):
        seg(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="cannot segment a int"):
        seg(3)


def test_result_api(photos, weights_file):
    r = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu")(photos[1])
    fractions = [c.fraction for c in r.classes]
    assert sum(c.pixels for c in r.classes) == 300 * 451
    assert fractions == sorted(fractions, reverse=True) and abs(sum(fractions) - 1) < 1e-9
    assert r.colorize().shape == (300, 451, 3)
    assert r.overlay(0.5).shape == (300, 451, 3)
    assert len(r.figure().axes) >= 2
    assert r.categories[15] == "person" and r.seconds > 0


def test_extreme_aspect_ratio_is_refused_not_run(weights_file):
    seg = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu")
    with pytest.raises(ValueError, match=r"aspect ratio 20000x100 is too extreme.*crop it"):
        seg(Image.new("RGB", (20000, 100)))


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") in (torch.device("cpu"), torch.device("mps"))
        with pytest.raises(ValueError, match="CUDA is not available on this machine; use --device cpu"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="not a device; use auto, cpu, cuda or mps"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Segmenter(SMALL, weights="random", batch_size=0)


def test_stream_keeps_order_reports_bad_inputs_and_matches_predict(tmp_path, photos, weights_file):
    paths = []
    for i, im in enumerate([photos[0], photos[1], photos[2], photos[1]]):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    sources = [paths[0], bad, paths[1], paths[2], paths[3]]
    one = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu")
    expected = [one(p).labels for p in paths]
    for workers, batch in ((0, 1), (2, 1), (2, 3)):
        seg = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu", batch_size=batch)
        out = list(seg.stream(sources, workers=workers, prefetch=2))
        assert [src for src, _ in out] == sources
        assert "not an image" in str(out[1][1])
        for (_, r), want in zip([out[0], out[2], out[3], out[4]], expected):
            assert (r.labels == want).mean() >= 0.9999


def test_autocast_precisions_and_bad_combos(photos, weights_file):
    fp32 = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu")(photos[1]).labels
    bf16 = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu", precision="bf16")(photos[1]).labels
    assert bf16.shape == fp32.shape and (bf16 == fp32).mean() > 0.8  # approximate, measured
    with pytest.raises(ValueError, match="int8 needs --backend openvino"):
        Segmenter(SMALL, weights="random", precision="int8")
