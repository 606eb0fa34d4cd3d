import json

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from seglens import Segmenter
from seglens.cli import main
from seglens.datasets import open_dataset
from seglens.evaluation import TTA, EvalConfig, _torchvision_inputs, score_dataset, write_worst
from seglens.visualize import voc_palette
from tests.conftest import varied

SMALL = "lraspp_mobilenet_v3_large"


@pytest.fixture(scope="module")
def seg(weights_file):
    return Segmenter(SMALL, weights=weights_file(SMALL), device="cpu")


def save_mask(path, labels):
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(voc_palette().ravel().tolist())
    im.save(path)


@pytest.fixture
def self_labelled(tmp_path, photos, seg):
    """A folder dataset whose masks are the model's own native predictions: a perfect score."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    labels = []
    for name, im in zip(("a", "b", "c"), photos):
        im.save(root / "images" / f"{name}.png")
        lab = seg(im).labels
        assert varied(lab)
        save_mask(root / "masks" / f"{name}.png", lab)
        labels.append(lab)
    return root, labels


def test_torchvision_protocol_resizes_like_the_reference(seg, photos):
    from seglens.datasets import Sample

    image = photos[1]  # 451 x 300
    target = np.zeros((300, 451), dtype=np.uint8)
    target[:, 200:] = 8
    target[:5] = 255
    x, t, shown = _torchvision_inputs(seg, Sample(name="x", image=image, target=target, instances=None))
    # torchvision: short side 300 -> 520, long side int(520 * 451 / 300) = 781
    assert x.shape == (3, 520, 781) and t.shape == (520, 781) and shown.size == (781, 520)
    # The reference: PIL bilinear for the image, nearest for the target, then /255 and normalise.
    ref_img = TF.resize(image, 520)
    ref_x = TF.normalize(TF.to_tensor(ref_img), mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    assert torch.allclose(x, ref_x, atol=1e-6)
    ref_t = np.asarray(TF.resize(Image.fromarray(target), 520, interpolation=TF.InterpolationMode.NEAREST))
    np.testing.assert_array_equal(t, ref_t)
    assert set(np.unique(t)) == {0, 8, 255}  # nearest: no new values


def test_perfect_predictions_score_100(self_labelled, seg):
    root, labels = self_labelled
    ds = open_dataset("folder", root)
    result = score_dataset(seg, ds, EvalConfig(protocol="native"))
    m = result.to_dict()
    assert m["miou"] == 100.0 and m["pixel_acc"] == 100.0 and m["mean_acc"] == 100.0
    assert m["top_confusions"] == []
    total = sum(lab.size for lab in labels)
    assert sum(c["gt_pixels"] for c in m["per_class"].values()) == total
    present = set(np.unique(np.concatenate([lab.ravel() for lab in labels])))
    assert {c["index"] for c in m["per_class"].values() if not c["absent"]} == present
    assert m["boundary"]["band_acc"] == 100.0 and m["boundary"]["interior_acc"] == 100.0
    assert [p["miou"] for p in m["per_image"]] == [100.0, 100.0, 100.0]


def test_known_errors_give_exact_numbers(self_labelled, seg):
    root, labels = self_labelled
    # Image "a" (512 x 512): shift the class of its first 64 rows by one (every one of those
    # pixels becomes wrong) and mark the next 64 rows as ignore (not scored).
    lab = labels[0].copy()
    lab[:64] = (labels[0][:64] + 1) % 21
    lab[64:128] = 255
    save_mask(root / "masks" / "a.png", lab)
    m = score_dataset(seg, open_dataset("folder", root), EvalConfig(protocol="native")).to_dict()
    total = sum(x.size for x in labels) - 64 * 512  # ignored rows are not counted
    wrong = 64 * 512
    assert m["pixel_acc"] == pytest.approx(100 * (total - wrong) / total, abs=1e-4)
    # rows = ground truth, columns = prediction (the unmodified labels), ignore left out
    expected = np.zeros((21, 21), dtype=np.int64)
    for target, pred in zip([lab, labels[1], labels[2]], labels):
        keep = target != 255
        np.add.at(expected, (target[keep], pred[keep]), 1)
    np.testing.assert_array_equal(np.array(m["confusion_matrix"]), expected)
    assert m["per_image"][0]["miou"] < 100.0 and m["per_image"][1]["miou"] == 100.0
    assert result_worst_order(seg, root) == ["a"]


def result_worst_order(seg, root):
    r = score_dataset(seg, open_dataset("folder", root), EvalConfig(protocol="native", worst=1))
    return [w.name for w in r.worst]


def test_tta_logits_average_the_augmentations(seg, photos):
    x = seg.network_input(photos[1])  # (3, 520, 781): odd width exercises the resize round trip
    plain, same = seg.logits(x[None])
    assert same is not None and torch.equal(plain, same)
    f = seg.run(x[None])[0]
    g = seg.run(x.flip(-1)[None])[0].flip(-1)
    tta = TTA.parse("flip")
    flip, p = seg.logits(x[None], scales=tta.scales, flip=tta.flip)
    assert torch.allclose(flip[0], (f + g) / 2, atol=1e-5) and torch.equal(p[0], f)
    tta = TTA.parse("scales=0.75,1.25,flip")
    multi, p = seg.logits(x[None], scales=tta.scales, flip=tta.flip)
    assert multi[0].shape == f.shape and p is None  # no plain member: scale 1 is not among them


def test_tta_parsing():
    assert TTA.parse("flip") == TTA(scales=(1.0,), flip=True)
    assert TTA.parse("scales=0.75,1.0,1.25,flip") == TTA(scales=(0.75, 1.0, 1.25), flip=True)
    assert str(TTA.parse("scales=0.5,1")) == "scales=0.5,1"
    with pytest.raises(ValueError, match="use 'flip' or 'scales="):
        TTA.parse("rotate")
    with pytest.raises(ValueError, match="scales must be numbers"):
        TTA.parse("scales=a,b")


def test_compare_tta_reports_the_gain(self_labelled, seg):
    root, _ = self_labelled
    m = score_dataset(
        seg, open_dataset("folder", root), EvalConfig(protocol="native", tta=TTA.parse("flip"), compare_tta=True)
    ).to_dict()
    c = m["tta_comparison"]
    assert c["plain"]["miou"] == 100.0  # the masks are the plain predictions
    assert c["tta"]["miou"] == m["miou"] and c["gain_miou"] == pytest.approx(m["miou"] - 100.0, abs=1e-3)
    assert m["tta"] == "flip"


def test_write_worst(self_labelled, seg, tmp_path):
    root, _ = self_labelled
    r = score_dataset(seg, open_dataset("folder", root), EvalConfig(protocol="native", worst=2))
    entries = write_worst(r, tmp_path / "out", seg).to_dict()["worst"]
    assert [e["file"] for e in entries] == [f"worst/01_{r.worst[0].name}.png", f"worst/02_{r.worst[1].name}.png"]
    assert Image.open(tmp_path / "out" / entries[0]["file"]).format == "PNG"


def test_cli_eval_end_to_end(self_labelled, tmp_path, capsys, weights_file):
    root, labels = self_labelled
    (root / "masks" / "c.png").unlink()  # an image without a mask: reported, not scored
    out = tmp_path / "report"
    code = main(
        [
            "eval",
            "--dataset",
            "folder",
            "--root",
            str(root),
            "--model",
            SMALL,
            "--weights",
            str(weights_file(SMALL)),
            "--out",
            str(out),
            "-q",
        ]
    )
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "missing_mask" in err
    m = json.loads((out / "metrics.json").read_text())
    assert m["miou"] == 100.0 and m["pixel_acc"] == 100.0 and m["protocol"] == "native"
    assert m["dataset"]["images"] == 2
    assert "person" in m["per_class"] and m["per_class"]["background"]["index"] == 0
    for f in ("report.md", "report.html", "metrics.json"):
        assert (out / f).is_file()
    assert stdout.startswith(f"{SMALL} on folder")


def test_cli_eval_strict_stops_on_label_problems(tmp_path, capsys, photos, weights_file):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    photos[1].save(root / "images" / "cat.jpg")
    binary = np.zeros((300, 451), dtype=np.uint8)
    binary[100:200, 100:300] = 255  # a 0/255 binary mask where class indices are expected
    Image.fromarray(binary, mode="L").save(root / "masks" / "cat.png")
    out = tmp_path / "report"
    code = main(
        [
            "eval",
            "--dataset",
            "folder",
            "--root",
            str(root),
            "--model",
            SMALL,
            "--weights",
            str(weights_file(SMALL)),
            "--out",
            str(out),
            "--strict",
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "binary_mask" in err and "label problems" in err
    assert not (out / "metrics.json").exists()


def test_cli_eval_missing_root(tmp_path, capsys):
    code = main(["eval", "--dataset", "voc", "--root", str(tmp_path / "nope"), "--weights", "random"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_cli_eval_explicit_folders_and_classes_file_name_the_classes(self_labelled, tmp_path, capsys, weights_file):
    """--images/--masks (same .png names, as CamVid) and --classes: the file's names everywhere."""
    root, labels = self_labelled
    images, masks = tmp_path / "photos", tmp_path / "annotations"
    masks.mkdir()
    (root / "images").rename(images)
    lab = labels[0].copy()
    top = np.bincount(lab[:64].ravel(), minlength=21).argmax()  # the commonest class in the top rows
    lab[:64][lab[:64] == top] = (top + 1) % 21  # ground truth says top + 1 where the model says top
    for name, target in zip("abc", [lab, labels[1], labels[2]]):
        save_mask(masks / f"{name}.png", target)
    names = [f"area {chr(65 + i)}" for i in range(21)]  # "area A" ... "area U": names with a space
    (tmp_path / "classes.txt").write_text("# my classes\n" + "\n".join(names) + "\n")
    out = tmp_path / "report"
    code = main(["eval", "--dataset", "folder", "--images", str(images), "--masks", str(masks),
                 "--classes", str(tmp_path / "classes.txt"), "--model", SMALL, "--weights", str(weights_file(SMALL)),
                 "--out", str(out), "--worst", "1", "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["class_names"] == names and list(m["per_class"]) == names
    assert m["per_class"]["area A"]["index"] == 0 and m["dataset"]["root"] == str(images)
    first = m["top_confusions"][0]
    assert (first["gt"], first["pred"]) == (names[(top + 1) % 21], names[top])
    report = (out / "report.md").read_text()
    assert f"{names[(top + 1) % 21]} -> {names[top]}" in report and "| area A |" in report
    assert "person" not in report and "class 4" not in report and "person" not in json.dumps(m)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dataset", "folder"], "argument --images: --dataset folder needs --root (holding images/ and masks/) or"),
        (["--dataset", "folder", "--images", "x"], "argument --masks: --dataset folder needs --root"),
        (["--dataset", "folder", "--root", "r", "--masks", "m"], "argument --masks: give --root or --images and"),
        (["--dataset", "voc"], "argument --root: required for --dataset voc"),
        (["--dataset", "voc", "--root", "r", "--images", "i"], "argument --images: applies only to --dataset folder"),
        (["--dataset", "ade20k", "--root", "r", "--mask-values", "0,1"], "argument --mask-values: applies only to"),
        (["--dataset", "folder", "--root", "r", "--mask-values", "0,300"], "argument --mask-values: '0,300': "),
    ],
)
def test_cli_eval_dataset_flags_usage_errors(flags, message, capsys):
    code = main(["eval", *flags, "--weights", "random"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: seglens eval: {message}") and err.count("\n") == 1, err


def test_cli_eval_library_errors_speak_flags(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    code = main(["eval", "--dataset", "folder", "--images", str(tmp_path / "images"), "--masks",
                 str(tmp_path / "nope"), "--weights", "random"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: {tmp_path / 'nope'}: no such folder (give the folder of the masks)\n"
    (tmp_path / "masks").mkdir()
    code = main(["eval", "--dataset", "folder", "--root", str(tmp_path), "--mask-values", "0,255",
                 "--ignore-index", "1", "--weights", "random"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --ignore-index 1 is one of the 2 classes --mask-values defines"), err


from tests.test_datasets import coco  # noqa: E402,F401  (fixture: a tiny COCO val2017 layout)


def test_coco_voc_reports_published_numbers_beside_measured(coco, seg):
    root, _ = coco
    ds = open_dataset("coco-voc", root)
    m = score_dataset(seg, ds, EvalConfig(protocol="torchvision")).to_dict()
    # lraspp_mobilenet_v3_large's torchvision meta: 57.9 mIoU / 91.2 pixel acc on COCO-val2017-VOC-labels
    assert m["published"]["miou"] == 57.9 and m["published"]["pixel_acc"] == 91.2
    assert "not them" in m["published"]["source"]  # test weights, not the official file
    assert m["size"]["unit"].startswith("pixels of a ground-truth region") and "instance masks" in m["size"]["unit"]
    # regions come from the instance masks: the 84x4 image alone holds 20 one-class rectangles
    assert sum(b["regions"] for b in m["size"]["buckets"].values()) >= 20
    assert score_dataset(seg, ds, EvalConfig(protocol="native")).to_dict()["published"] is None


def test_models_without_torchvision_preset_are_scored_natively(tmp_path, photos):
    """A LoadedModel whose transforms are not torchvision's preset (as hf: checkpoints) gets the
    native protocol even when the config asks for torchvision's, and says so in the metrics."""
    from seglens.models import LoadedModel

    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 4, 3, padding=1)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return {"out": self.net(x)}

    loaded = LoadedModel(name="toy", model=Net().eval(), categories=("a", "b", "c", "d"), transforms=TF.to_tensor,
                         weights="official", weights_tag="toy", sha256=None, meaningful=True,
                         normalize=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))  # fmt: skip
    toy = Segmenter(loaded, device="cpu")
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = photos[1].resize((90, 60))
    image.save(root / "images" / "a.png")
    lab = toy(image).labels
    assert varied(lab)
    save_mask(root / "masks" / "a.png", lab)
    m = score_dataset(toy, open_dataset("folder", root), EvalConfig(protocol="torchvision", worst=0)).to_dict()
    assert m["protocol"] == "native" and m["published"] is None
    assert m["miou"] == 100.0 and m["pixel_acc"] == 100.0
