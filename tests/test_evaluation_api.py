"""seglens.evaluate as a library call: same report as `seglens eval`, typed result, reuse of a
loaded Segmenter, events, and the name seglens.evaluate (a function; the module is seglens.evaluation)."""

import dataclasses
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

import seglens
from seglens.cli import main
from seglens.datasets import open_dataset
from seglens.evaluation import EvalConfig, EvalEvent, EvalResult, LabelProblemsError, evaluate
from tests.test_evaluate import SMALL, save_mask, seg, self_labelled  # noqa: F401  (fixtures)

TIMINGS = ("seconds", "images_per_s")


@pytest.fixture
def imperfect(self_labelled):
    """The self-labelled folder dataset with known errors in image "a": scores below 100."""
    root, labels = self_labelled
    lab = labels[0].copy()
    lab[:64] = (labels[0][:64] + 1) % 21
    lab[64:96] = 255
    save_mask(root / "masks" / "a.png", lab)
    return root


def without_timings(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in TIMINGS}


def test_library_call_writes_what_the_cli_writes(imperfect, tmp_path, capsys, weights_file):
    root, weights = imperfect, weights_file(SMALL)
    flags = ["--tta", "flip", "--compare-tta", "--worst", "2", "--boundary-width", "3"]
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
            str(weights),
            "--out",
            str(tmp_path / "cli"),
            "-q",
            *flags,
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = seglens.evaluate(
        "folder",
        root,
        model=SMALL,
        weights=weights,
        out=tmp_path / "lib",
        tta="flip",
        compare_tta=True,
        worst=2,
        boundary_width=3,
    )
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text(encoding="utf-8"))
    lib = json.loads((tmp_path / "lib" / "metrics.json").read_text(encoding="utf-8"))
    assert without_timings(lib) == without_timings(cli)
    assert 0 < lib["miou"] < 100 and lib["tta_comparison"] is not None and len(lib["worst"]) == 2
    assert json.loads(result.to_json()) == lib  # the returned result is what was written
    for w in lib["worst"]:  # the same panels, drawn the same
        assert (tmp_path / "lib" / w["file"]).read_bytes() == (tmp_path / "cli" / w["file"]).read_bytes()
    reports = [(tmp_path / d / "report.md").read_text(encoding="utf-8").splitlines() for d in ("cli", "lib")]
    assert [line for line in reports[0] if " s (" not in line] == [line for line in reports[1] if " s (" not in line]
    assert {p.name for p in (tmp_path / "lib" / "plots").iterdir()} == {
        p.name for p in (tmp_path / "cli" / "plots").iterdir()
    }


def test_typed_result(imperfect, seg):
    r = evaluate("folder", imperfect, segmenter=seg, protocol="native", worst=1)
    assert isinstance(r, EvalResult) and r.miou == r.to_dict()["miou"] and r.pixel_acc < 100
    person = r.per_class["person"]
    assert person.name == "person" and person.index == 15 and not person.absent and person.iou is not None
    assert r.confusion_matrix.shape == (21, 21) and r.confusion_matrix.dtype == np.int64
    with pytest.raises(ValueError):
        r.confusion_matrix[0, 0] = 1  # read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.miou = 1.0
    s = r.settings
    assert (s.model, s.protocol, s.tta, s.backend, s.precision, s.dataset.kind, s.dataset.images) == (
        SMALL,
        "native",
        None,
        "torch",
        "fp32",
        "folder",
        3,
    )
    assert r.worst[0].name == "a" and r.worst[0].file is None and r.worst[0].pred.shape == r.worst[0].target.shape
    assert EvalResult.from_json(r.to_json()).to_dict() == r.to_dict()
    assert pickle.loads(pickle.dumps(r)).to_dict() == r.to_dict()  # e.g. back from a worker process


def test_a_loaded_segmenter_a_dataset_object_and_a_config(imperfect, seg):
    by_options = evaluate("folder", imperfect, segmenter=seg, protocol="native", worst=0)
    by_config = evaluate(
        open_dataset("folder", imperfect), segmenter=seg, config=EvalConfig(protocol="native", worst=0)
    )
    assert without_timings(by_config.to_dict()) == without_timings(by_options.to_dict())
    assert by_options.settings.protocol == "native"  # folder's default protocol too
    with pytest.raises(ValueError, match="device=: segmenter= is used as it is"):
        evaluate("folder", imperfect, segmenter=seg, device="cpu")
    with pytest.raises(ValueError, match="model=: segmenter= is used as it is"):
        evaluate("folder", imperfect, segmenter=seg, model="fcn_resnet50")
    with pytest.raises(ValueError, match="protocol=: config= is used as it is"):
        evaluate("folder", imperfect, segmenter=seg, config=EvalConfig(), protocol="native")
    with pytest.raises(ValueError, match="split=, root=: a dataset object is used as it is"):
        evaluate(open_dataset("folder", imperfect), imperfect, segmenter=seg, split="train")
    with pytest.raises(TypeError, match="unknown options batchsize"):
        evaluate("folder", imperfect, segmenter=seg, batchsize=4)
    with pytest.raises(ValueError, match="tta='rotate': use 'flip' or 'scales="):
        evaluate("folder", imperfect, segmenter=seg, tta="rotate")
    with pytest.raises(ValueError, match="compare_tta needs tta"):
        evaluate("folder", imperfect, segmenter=seg, compare_tta=True)


def test_label_problems_are_events_and_strict_stops(imperfect, seg):
    (imperfect / "images" / "orphan.png").write_bytes((imperfect / "images" / "a.png").read_bytes())  # no mask
    events: list[EvalEvent] = []
    bars: list[tuple[str, int, list[int]]] = []

    class Bar:
        def __init__(self, total, unit, desc):
            self.steps: list[int] = []
            bars.append((desc, total, self.steps))

        def update(self, n=1):
            self.steps.append(n)

        def close(self):
            pass

    r = evaluate("folder", imperfect, segmenter=seg, worst=0, on_event=events.append, progress=Bar)
    assert [e.kind for e in events] == ["label_problems"]
    assert [p.kind for p in events[0].problems] == ["missing_mask"] and r.label_problems == events[0].problems
    assert [(desc, total, sum(steps)) for desc, total, steps in bars] == [("check labels", 3, 3), ("eval", 3, 3)]
    with pytest.raises(LabelProblemsError, match="1 label problem .*missing_mask.*strict=False") as info:
        evaluate("folder", imperfect, segmenter=seg, strict=True)
    assert info.value.problems == r.label_problems
    assert pickle.loads(pickle.dumps(info.value)).problems == r.label_problems


def _toy_segmenter(categories):
    """A 4-class conv net without torchvision's preset, named like a head without class names."""
    import torch
    import torchvision.transforms.functional as TF

    from seglens import Segmenter
    from seglens.models import LoadedModel

    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, len(categories), 3, padding=1)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return {"out": self.net(x)}

    loaded = LoadedModel(name="toy", model=Net().eval(), categories=tuple(categories), transforms=TF.to_tensor,
                         weights="official", weights_tag="toy", sha256=None, meaningful=True,
                         normalize=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))  # fmt: skip
    return Segmenter(loaded, device="cpu")


def test_evaluate_folder_with_images_masks_and_a_classes_file(tmp_path, photos):
    from seglens.datasets import DatasetError

    toy = _toy_segmenter([f"class {i}" for i in range(4)])
    images, masks = tmp_path / "train", tmp_path / "trainannot"
    images.mkdir()
    masks.mkdir()
    image = photos[1].resize((90, 60))
    image.save(images / "a.png")
    pred = toy(image).labels
    top = int(np.bincount(pred[:20].ravel(), minlength=4).argmax())
    gt = pred.copy()
    gt[:20][pred[:20] == top] = (top + 1) % 4  # ground truth: top + 1 where the model says top
    save_mask(masks / "a.png", gt)
    names = ["road", "pavement", "traffic light", "sky"]
    classes = tmp_path / "classes.txt"
    classes.write_text("road 128,64,128\npavement 60,40,222\ntraffic light #FAAA1E\nsky 128,128,128\n")
    r = evaluate("folder", images=images, masks=masks, classes=classes, segmenter=toy, out=tmp_path / "out", worst=1)
    assert r.class_names == tuple(names) and list(r.per_class) == names
    wrong = int((pred[:20] == top).sum())
    assert (r.top_confusions[0].gt, r.top_confusions[0].pred, r.top_confusions[0].pixels) == (
        names[(top + 1) % 4], names[top], wrong)  # fmt: skip
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"{names[(top + 1) % 4]} -> {names[top]}" in report and "class 0" not in report
    assert r.worst[0].file == "worst/01_a.png" and (tmp_path / "out" / "worst" / "01_a.png").is_file()
    # the class count must still match the model's
    classes.write_text("road\npavement\nsky\n")
    with pytest.raises(DatasetError, match=rf"^{classes}: the dataset has 3 classes, the model 4; "):
        evaluate("folder", images=images, masks=masks, classes=classes, segmenter=toy)
    with pytest.raises(DatasetError, match=r"^mask_values: the dataset has 2 classes, the model 4; "):
        evaluate("folder", images=images, masks=masks, mask_values=(0, 255), segmenter=toy)
    with pytest.raises(TypeError, match=r"needs root= \(the dataset's folder\), or images= and masks= for folder"):
        evaluate("folder", segmenter=toy)


def test_cli_eval_reads_tta_as_a_flag(tmp_path, capsys):
    code = main(["eval", "--dataset", "folder", "--root", str(tmp_path), "--tta", "rotate"])
    err = capsys.readouterr().err
    assert code == 2 and "argument --tta: 'rotate': use 'flip' or 'scales=" in err and err.count("\n") == 1
    code = main(["eval", "--dataset", "folder", "--root", str(tmp_path), "--compare-tta"])
    assert code == 2 and capsys.readouterr().err == "error: --compare-tta needs --tta (e.g. --tta flip)\n"


def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_seglens_evaluate_is_the_function_whatever_is_imported_first():
    # The function first, then the module: importing seglens.evaluation does not rebind it, and
    # there is no seglens.evaluate module to rebind it to.
    first = """
import importlib, sys, seglens
f = seglens.evaluate
assert callable(f) and f.__module__ == "seglens.evaluation" and f.__name__ == "evaluate"
import seglens.evaluation
assert seglens.evaluate is f is seglens.evaluation.evaluate
try:
    import seglens.evaluate
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("seglens.evaluate is a module")
assert seglens.evaluate is f and "seglens.evaluate" not in sys.modules
print("ok")
"""
    # The module first (as `from seglens.evaluation import ...` does), then the name.
    second = """
import seglens.evaluation
from seglens.evaluation import evaluate as g
from seglens import evaluate
import seglens
assert evaluate is g is seglens.evaluate and type(evaluate).__name__ == "function"
print("ok")
"""
    assert run_python(first) == "ok"
    assert run_python(second) == "ok"


def test_importing_seglens_and_the_result_type_stays_cheap():
    code = """
import sys, seglens
assert "evaluate" in seglens.__all__ and "EvalResult" in seglens.__all__
seglens.EvalResult
import seglens.evaltypes, seglens.report
print(sorted(m for m in ("torch", "torchvision", "seglens.evaluation") if m in sys.modules))
"""
    assert run_python(code) == "[]"
