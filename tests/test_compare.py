"""seglens compare: each configuration's numbers equal seglens eval's, deltas are their exact
differences, the paired bootstrap behaves as it must (zero-width at A = A, excluding 0 when one is
better on every image), eval folders compare like runs, entries are spelled unambiguously, and
the report and the command work."""

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from seglens.cli._argtypes import _Parser
from seglens.cli._compare import add_compare_parser, cmd_compare
from seglens.compare import (
    COUNTS_FILE,
    CompareConfig,
    EvalFolder,
    ImageCounts,
    compare,
    paired_bootstrap,
    parse_entry,
    read_counts,
    write_counts,
)
from seglens.evaltypes import TTA
from seglens.evaluation import evaluate
from seglens.metrics import confusion_matrix, scores
from tests._shapes import write_shapes
from tests.conftest import calibrated_model

SMALL = "lraspp_mobilenet_v3_large"
FAST = f"model={SMALL},scale=1"  # the network at the 48-pixel images' own size: fast


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Five 3-class shape images plus one whose image cannot be read, and two seeded 3-class models."""
    root = write_shapes(tmp_path_factory.mktemp("shapes"), 5, seed=3, size=48)
    (root / "images" / "003x.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((48, 48), np.uint8), mode="L").save(root / "masks" / "003x.png")
    weights = []
    for seed in (1, 2):
        path = tmp_path_factory.mktemp("weights") / f"shapes{seed}.pth"
        torch.save(calibrated_model(SMALL, num_classes=3, seed=seed).state_dict(), path)
        weights.append(path)
    return root, weights


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory):
    """compare A (plain), flipped (other weights, flip TTA) and C (A with small-region removal)
    with a report, and seglens eval of each."""
    root, (w1, w2) = shapes
    out = tmp_path_factory.mktemp("compare")
    entries = [
        f"{FAST},weights={w1}",
        f"{FAST},weights={w2},tta=flip,name=flipped",
        f"{FAST},weights={w1},refine=small=40",
    ]
    result = compare("folder", root, entries, out=out, classes=root / "classes.txt", bootstrap=300, seed=7)
    evals = []
    for w, tta, refine in ((w1, None, None), (w2, "flip", None), (w1, None, "small=40")):
        folder = tmp_path_factory.mktemp("eval")
        options = dict(model=SMALL, weights=w, tta=tta, refine=refine, scale=1.0, classes=root / "classes.txt", worst=0)
        evals.append((evaluate("folder", root, out=folder, **options), folder))
    return result, out, evals


def test_numbers_equal_eval_and_deltas_are_differences(run):
    result, _, ((ea, _), (eb, _), (ec, _)) = run
    a, b, c = result.configs
    assert (a.name, b.name, c.name) == ("A", "flipped", "C") and c.refine == "small=40"
    assert result.class_names == ea.class_names == ("background", "square", "disc")
    assert ec.settings.refine == "small=40" and ec.miou != ea.miou  # the refinement changed something
    for config, ev in ((a, ea), (b, eb), (c, ec)):
        assert (config.miou, config.pixel_acc) == (ev.miou, ev.pixel_acc)
        assert config.iou == tuple(ev.per_class[n].iou for n in ev.class_names)
        tp, gt, pred = result.counts[config.name].totals()  # the per-image counts sum to eval's matrix
        np.testing.assert_array_equal(tp, np.diag(ev.confusion_matrix))
        np.testing.assert_array_equal(gt, ev.confusion_matrix.sum(1))
        np.testing.assert_array_equal(pred, ev.confusion_matrix.sum(0))
    d = result.delta("flipped")
    assert d.versus == "A"
    assert d.miou.value == round(eb.miou - ea.miou, 4)
    assert d.pixel_acc.value == round(eb.pixel_acc - ea.pixel_acc, 4)
    assert [x.value for x in d.iou] == [round(y - x, 4) for x, y in zip(a.iou, b.iou)]
    assert d.miou.ci[0] <= d.miou.value <= d.miou.ci[1]
    assert [s.index for s in result.skipped] == [4] and result.dataset.images == 5 == ea.settings.dataset.images
    assert a.images_per_s > 0 and b.model_ms_median > 0 and b.end_to_end_ms_median >= b.model_ms_median


def test_report(run):
    from seglens._compare_report import render_markdown

    result, out, _ = run
    for name in ("compare.json", "compare.md", "compare.html", "plots/class_deltas.png"):
        assert (out / name).is_file(), name
    md = (out / "compare.md").read_text()
    assert (
        "A vs flipped vs C" in md
        and "tta=flip" in md
        and "refine=small=40" in md
        and "Speed, measured in this run" in md
    )
    data = json.loads((out / "compare.json").read_text())
    assert [c["name"] for c in data["configs"]] == ["A", "flipped", "C"]
    assert data["deltas"][0]["miou"]["delta"] == result.delta("flipped").miou.value
    assert render_markdown(data, plots_dir_rel="plots") == md  # the report renders from the json alone
    assert 0 < len(result.disagreements) <= 6
    fractions = [g.fraction for g in result.disagreements]
    assert fractions == sorted(fractions, reverse=True)
    for g in result.disagreements:
        assert (out / g.file).is_file() and g.file.startswith("disagree/")
        assert (
            set(g.preds) == {"A", "flipped", "C"}
            and set(g.fractions) == {"flipped", "C"}
            and g.image.shape[:2] == g.target.shape
        )
    assert "data:image/png;base64," in (out / "compare.html").read_text()


def test_eval_folders_compare_as_the_run(run):
    result, _, ((_, fa), (_, fb), _) = run
    for folder, name in ((fa, "A"), (fb, "flipped")):  # seglens eval wrote them: the run's counts exactly
        written = read_counts(folder / COUNTS_FILE)
        assert written.names == result.counts[name].names
        for key in ("tp", "gt", "pred"):
            assert np.array_equal(getattr(written, key), getattr(result.counts[name], key)), (name, key)
    write_counts(fa / COUNTS_FILE, result.counts["A"])
    write_counts(fb / COUNTS_FILE, result.counts["flipped"])
    back = read_counts(fa / COUNTS_FILE)
    assert back.names == result.counts["A"].names and np.array_equal(back.tp, result.counts["A"].tp)
    folders = compare(None, None, [str(fa), EvalFolder(fb, name="flipped")], bootstrap=300, seed=7)
    assert [(c.miou, c.pixel_acc, c.iou) for c in folders.configs] == [
        (c.miou, c.pixel_acc, c.iou) for c in result.configs[:2]
    ]
    assert folders.deltas[0] == result.deltas[0]  # same counts, same seed: same intervals
    assert folders.configs[0].source == "folder" and folders.configs[0].images_per_s is None
    assert folders.disagreements == ()
    (fb / COUNTS_FILE).unlink()
    with pytest.raises(ValueError, match=COUNTS_FILE):
        compare(None, None, [fa, fb])


def test_a_against_itself_is_zero(shapes):
    root, (w1, _) = shapes
    entry = f"{FAST},weights={w1}"
    r = compare("folder", root, [entry, entry], classes=root / "classes.txt", bootstrap=200, limit=2)
    d = r.delta("B")
    for delta in (d.miou, d.pixel_acc, *d.iou):
        assert delta.value == 0 and delta.ci == (0.0, 0.0) and not delta.excludes_zero
    assert r.disagreements == ()


def test_bootstrap_known_answers():
    rng = np.random.default_rng(0)
    n, c = 40, 3
    gt = rng.integers(50, 500, (n, c))
    worse = ImageCounts(tuple(map(str, range(n))), gt // 2, gt, gt.copy())  # half of each class found
    better = ImageCounts(worse.names, gt * 9 // 10, gt, gt.copy())  # 90%: better on every image
    (same,) = paired_bootstrap([worse, worse], resamples=500, seed=1)
    assert same.miou == (0.0, 0.0) and same.pixel_acc == (0.0, 0.0) and (same.iou == 0).all()
    (up,) = paired_bootstrap([worse, better], resamples=500, seed=1)
    assert up.miou[0] > 0 and up.pixel_acc[0] > 0 and (up.iou[:, 0] > 0).all()
    (again,) = paired_bootstrap([worse, better], resamples=500, seed=1)
    assert again.miou == up.miou  # seeded


def test_count_scores_are_metrics_scores():
    from seglens._compare_stats import count_scores

    rng = np.random.default_rng(3)
    target = rng.integers(0, 5, (60, 70))
    target[0] = 255
    pred = np.where(rng.random(target.shape) < 0.7, np.minimum(target, 3), rng.integers(0, 4, target.shape))
    m = confusion_matrix(target, pred, 5)  # class 4: ground truth only; none: absent
    s = scores(m)
    miou, acc, iou = count_scores(np.diag(m), m.sum(1), m.sum(0))
    assert (miou, acc) == (s.miou, s.pixel_acc)
    np.testing.assert_array_equal(iou, s.iou)


def test_entry_spelling():
    c = parse_entry(f"model={SMALL},weights=w.pth,tta=scales:0.75:1:1.25+flip,refine=guided+small=200,scale=0.5")
    assert c.tta == TTA(scales=(0.75, 1.0, 1.25), flip=True) and c.refine == "guided=8:0.001,small=200"
    assert c.scale == 0.5 and parse_entry(c.spec) == c
    assert parse_entry({"weights": "w.pth", "tta": "flip"}) == CompareConfig(weights="w.pth", tta=TTA(flip=True))
    assert parse_entry("tta=scales=0.5:1").tta == TTA(scales=(0.5, 1.0))
    for text, key in [("modle=x", "modle"), ("precision=int9", "precision"), ("tta=rotate", "tta"),
                      ("refine=blur", "refine"), ("scale=big", "scale"), ("weights=a,weights=b", "weights"),
                      ("backend=tensorrt", "backend")]:  # fmt: skip
        with pytest.raises(ValueError, match=key) as e:
            parse_entry(text)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="neither key=value"):
        parse_entry("no_such_folder")
    with pytest.raises(ValueError, match="two or more"):
        compare("folder", "x", ["weights=a"])


def _parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true")
    common.add_argument("-q", "--quiet", action="store_true")
    parser = _Parser(prog="seglens")
    add_compare_parser(parser.add_subparsers(dest="command", required=True, parser_class=_Parser), common)
    return parser


def test_command(shapes, tmp_path, capsys):
    root, (w1, w2) = shapes
    messages = []
    argv = ["compare", "--dataset", "folder", "--root", str(root), "--classes", str(root / "classes.txt"), "-q",
            "--limit", "2", "--bootstrap", "50", "-o", str(tmp_path / "r"), f"{FAST},weights={w1}",
            f"{FAST},weights={w2},name=other"]  # fmt: skip
    assert cmd_compare(_parser().parse_args(argv), messages.append) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("A: mIoU ") and lines[1].startswith("other: mIoU ") and "img/s" in lines[1]
    assert (tmp_path / "r" / "compare.html").is_file() and "report:" in messages[-1]
    messages.clear()
    bad = argv[:-1] + [f"{FAST},wieghts={w2}"]
    assert cmd_compare(_parser().parse_args(bad), messages.append) == 2
    assert len(messages) == 1 and "wieghts" in messages[0]


def test_cli_main(shapes, tmp_path):
    from seglens.cli import build_parser, main

    if "compare" not in build_parser().format_help():
        pytest.skip("seglens compare is not hooked into the CLI yet")
    root, (w1, _) = shapes
    entries = [f"{FAST},weights={w1}", f"{FAST},weights={w1},tta=flip"]
    argv = ["compare", "--dataset", "folder", "--root", str(root), "--limit", "1", "--bootstrap", "10", "-q",
            "-o", str(tmp_path / "r"), *entries]  # fmt: skip
    assert main(argv) == 0
    assert main(argv[:-1] + ["precison=int8"]) == 2


def test_disagreement_panels_are_a_row_for_two_and_a_grid_for_more(run):
    from seglens._compare_report import _GRID_COLUMNS, _PANEL_PX

    result, out, _ = run
    g = result.disagreements[0]
    with Image.open(out / g.file) as im:  # three configurations: 2 + 1 + 2 x 2 = 7 tiles in a grid of 4
        width, height = im.size
    h, w = g.target.shape
    tile_w = round(w * _PANEL_PX / max(h, w))
    assert width == 2 * 8 + _GRID_COLUMNS * tile_w + (_GRID_COLUMNS - 1) * 10
    assert height > 2 * round(h * _PANEL_PX / max(h, w))  # two rows of pictures
