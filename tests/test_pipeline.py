"""seglens.pipeline: the library run under `seglens segment` and `seglens bench`.

The command and the library write the same files; a run killed with SIGKILL and resumed with
--skip-existing ends exactly as a clean run; decoder warnings stay in the summary. A calibrated
lraspp model from a test-saved .pth; nothing is downloaded.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image

import seglens
from seglens.cli import main
from seglens.pipeline import JOURNAL, RunError, RunEvent, RunInterrupted, RunSummary, segment
from seglens.pipeline._files import read_journal
from tests.conftest import photo

SMALL = "lraspp_mobilenet_v3_large"


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def without_timings(summary: dict) -> dict:
    return {**summary, "images": [{k: v for k, v in e.items() if k != "seconds"} for e in summary["images"]]}


def csv_without_timings(path):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(open(path, encoding="utf-8"))]


def assert_same_run(a, b):
    """Two output folders hold the same files, byte for byte, and the same summary but for timings."""
    assert files_under(a) == files_under(b)
    for rel in files_under(a):
        if rel.startswith("summary."):
            continue
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert without_timings(json.loads((a / "summary.json").read_text())) == without_timings(
        json.loads((b / "summary.json").read_text())
    )
    assert csv_without_timings(a / "summary.csv") == csv_without_timings(b / "summary.csv")


@pytest.fixture
def photo_folder(tmp_path, photos):
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    photos[0].resize((256, 256)).save(d / "astronaut.jpg", quality=90)
    photos[1].save(d / "sub" / "chelsea.png")
    photos[2].resize((300, 200)).save(d / "coffee.jpg", quality=90)
    return d


def test_library_call_writes_what_the_command_writes(photo_folder, tmp_path, capsys, weights_file):
    w = weights_file(SMALL)
    summary = seglens.segment([str(photo_folder)], tmp_path / "lib", model=SMALL, weights=w)
    assert (
        main(
            ["segment", str(photo_folder), "--out", str(tmp_path / "cli"), "--model", SMALL, "--weights", str(w), "-q"]
        )
        == 0
    )
    capsys.readouterr()
    assert isinstance(summary, seglens.RunSummary) and summary.ok
    assert (summary.segmented, summary.skipped, summary.failures) == (3, 0, ())
    assert_same_run(tmp_path / "lib", tmp_path / "cli")
    assert "astronaut.png" in files_under(tmp_path / "lib") and JOURNAL not in files_under(tmp_path / "lib")
    assert summary.to_json() == (tmp_path / "lib" / "summary.json").read_text(encoding="utf-8")
    assert [e["input"] for e in summary.items] == [
        str(photo_folder / n) for n in ("astronaut.jpg", "coffee.jpg", "sub/chelsea.png")
    ]
    assert summary.settings["model"] == SMALL and summary.settings["weights"] == str(w)
    with pytest.raises(Exception):  # frozen
        summary.items = ()


def test_entries_are_the_results_to_dict(tmp_path, photos, weights_file):
    src = tmp_path / "cat.png"
    photos[1].save(src)
    summary = segment(src, tmp_path / "out", model=SMALL, weights=weights_file(SMALL), outputs=["mask", "confidence"])
    result = seglens.Segmenter(SMALL, weights=weights_file(SMALL), device="cpu", confidence=True)(src)
    described = result.to_dict()
    entry = summary.items[0]
    assert list(entry) == ["input", "width", "height", "seconds", "classes", "outputs"]
    assert {k: entry[k] for k in ("width", "height", "classes")} == {
        k: described[k] for k in ("width", "height", "classes")
    }
    assert entry["outputs"] == {"mask": "cat.png", "confidence": "cat_confidence.png"}
    row = described["classes"][0]
    assert list(row) == ["index", "name", "pixels", "fraction", "color", "mean_confidence"]
    assert row["fraction"] == round(result.classes[0].fraction, 6) and row["mean_confidence"] == round(
        result.classes[0].confidence, 4
    )
    exact = result.to_dict(digits=None, hex_colors=True)["classes"][0]
    assert exact["fraction"] == result.classes[0].fraction and exact["hex"] == "#{:02x}{:02x}{:02x}".format(
        *exact["color"]
    )


def kill_when(proc, journal, lines: int, timeout: float = 240.0) -> int:
    """SIGKILL ``proc`` once ``journal`` holds ``lines`` lines; returns the count seen then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen = journal.read_text(encoding="utf-8").count("\n")
        except OSError:
            seen = 0
        if seen >= lines:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            return seen
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended before it could be killed (exit {proc.returncode}): {proc.stderr.read()}"
            )
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("the journal did not grow in time")


def test_killed_with_sigkill_and_resumed_ends_exactly_like_a_clean_run(tmp_path, capsys, weights_file):
    # 12 photos (crops of three real ones); all three outputs, so a kill can land in any write.
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(12):
        image = photo(("astronaut", "chelsea", "coffee")[k % 3])
        image.crop((5 * k, 3 * k, image.width - 4 * k, image.height - 2 * k)).resize((224 + 8 * k, 200)).save(
            folder / f"p{k:02d}.jpg", quality=90
        )
    w = str(weights_file(SMALL))
    args = ["segment", str(folder), "--model", SMALL, "--weights", w, "-q"]
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "seglens.cli", *args, "--out", str(killed)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    seen = kill_when(first, killed / JOURNAL, 3)  # the header and two entries at least
    assert first.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()  # the old way lost everything done so far
    # Killed again while resuming: the journal is rewritten with what it takes over, then grows.
    second = subprocess.Popen([*command, "--skip-existing"], stderr=subprocess.PIPE, text=True, env=env)
    kill_when(second, killed / JOURNAL, seen + 2)
    header, entries = read_journal(killed)
    assert header["settings"]["model"] == SMALL and len(entries) >= seen - 1
    (killed / ".p05_figure.png.tmp-abcd_123").write_bytes(b"half a figure")  # as a kill mid-write leaves
    (killed / ".p06.png.tmp-zz00zz00").write_bytes(b"half a mask")

    assert main([*args, "--out", str(killed), "--skip-existing"]) == 0
    err = capsys.readouterr().err
    done = int(err.split("done: ")[1].split(" segmented")[0])
    assert f"done: {done} segmented, {12 - done} skipped, 0 failed" in err and 12 - done >= 2
    assert main([*args, "--out", str(tmp_path / "clean")]) == 0
    capsys.readouterr()
    assert_same_run(killed, tmp_path / "clean")  # no temporaries, no journal, every entry
    assert len(json.loads((killed / "summary.json").read_text())["images"]) == 12


def test_stale_temporaries_of_its_own_outputs_are_removed_on_start(tmp_path, photos, weights_file):
    src = tmp_path / "in" / "cat.png"
    src.parent.mkdir()
    photos[1].save(src)
    out = tmp_path / "out"
    (out / ".clip_mask.0123abcd.partial").mkdir(parents=True)  # not this run's: no video named clip
    (out / ".cat_overlay.jpg.tmp-k2j4_9x1").write_bytes(b"x")
    (out / ".summary.json.tmp-aaaaaaaa").write_bytes(b"{")
    (out / f".{JOURNAL}.tmp-bbbbbbbb").write_bytes(b"")  # atomic_open: "." + the name
    (out / ".cat.png.keep").write_bytes(b"someone else's")
    summary = segment(src.parent, out, model=SMALL, weights=weights_file(SMALL), outputs=("mask", "overlay"))
    assert summary.ok
    assert files_under(out) == [".cat.png.keep", "cat.png", "cat_overlay.jpg", "summary.csv", "summary.json"]
    assert (out / ".clip_mask.0123abcd.partial").is_dir()


def test_resume_takes_entries_only_from_runs_with_the_same_settings(tmp_path, photos, weights_file):
    src = tmp_path / "in"
    src.mkdir()
    photos[1].save(src / "cat.png")
    photos[2].save(src / "mug.png")
    out = tmp_path / "out"
    w = weights_file(SMALL)
    first = segment(src, out, model=SMALL, weights=w, outputs=["mask"])
    again = segment(src, out, model=SMALL, weights=w, outputs=["mask"], skip_existing=True)
    assert (again.segmented, again.skipped) == (0, 2)
    assert [without_timings({"images": [e]}) for e in again.items] == [
        without_timings({"images": [e]}) for e in first.items
    ]
    assert [e["seconds"] for e in again.items] == [e["seconds"] for e in first.items]  # taken over, not redone
    tiled = segment(src, out, model=SMALL, weights=w, outputs=["mask"], skip_existing=True, tile=256)
    assert (tiled.segmented, tiled.skipped) == (2, 0)  # other labels: the files are redone
    # Outputs there but no entry anywhere (killed after writing, before its journal line): redone.
    (out / "summary.json").unlink()
    redo = segment(src, out, model=SMALL, weights=w, outputs=["mask"], skip_existing=True, tile=256)
    assert (redo.segmented, redo.skipped) == (2, 0) and len(redo.items) == 2


def test_interrupt_raises_with_the_summary_written(tmp_path, photos, weights_file):
    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        photos[k].save(src / f"p{k}.png")
    out = tmp_path / "out"

    def stop_after_the_first(event: RunEvent) -> None:
        if event.kind == "done":
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        segment(src, out, model=SMALL, weights=weights_file(SMALL), outputs=["mask"], on_event=stop_after_the_first)
    summary = info.value.summary
    assert isinstance(info.value, KeyboardInterrupt) and isinstance(summary, RunSummary)
    assert summary.segmented >= 1 and len(summary.items) == summary.segmented
    assert json.loads((out / "summary.json").read_text()) == summary.to_dict()
    assert not (out / JOURNAL).exists()


def test_events_progress_factory_and_a_ready_segmenter(tmp_path, photos, weights_file):
    src = tmp_path / "in"
    src.mkdir()
    photos[0].save(src / "a.png")
    photos[1].save(src / "b.png")
    (src / "broken.png").write_bytes(b"not an image")
    bars = []

    class Bar:
        def __init__(self, **kwargs):
            self.kwargs, self.n, self.closed = kwargs, 0, False
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def close(self):
            self.closed = True

    events = []
    seg = seglens.Segmenter(SMALL, weights=weights_file(SMALL), device="cpu")
    summary = segment(
        [src],
        tmp_path / "out",
        segmenter=seg,
        outputs=("mask",),
        progress=Bar,
        on_event=events.append,
        workers=0,
        writers=0,
    )
    assert [(b.kwargs["total"], b.kwargs["unit"], b.n, b.closed) for b in bars] == [(3, "img", 3, True)]
    assert [(e.kind, os.path.basename(e.input)) for e in events if e.kind != "failed"] == [
        ("done", "a.png"),
        ("done", "b.png"),
    ]
    failed = [e for e in events if e.kind == "failed"]
    assert len(failed) == 1 and failed[0].input == str(src / "broken.png") and "not an image" in failed[0].message
    assert summary.settings["model"] == SMALL and summary.failures[0]["input"] == str(src / "broken.png")
    with pytest.raises(ValueError, match="tile=: a given segmenter= is used as it is"):
        segment([src], tmp_path / "x", segmenter=seg, tile=256)
    with pytest.raises(TypeError, match="unknown options frobnicate"):
        segment([src], tmp_path / "x", frobnicate=1)
    with pytest.raises(RunError, match="no images found"):
        segment([tmp_path / "missing"], tmp_path / "x", segmenter=seg)
    assert not (tmp_path / "x").exists()


def test_library_errors_speak_api_terms_and_the_command_its_flags(tmp_path, capsys):
    av = pytest.importorskip("av")
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(2):
            container.mux(
                stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24"))
            )
        container.mux(stream.encode(None))
    summary = segment(clip, tmp_path / "out", model=SMALL, weights="random", outputs=["figure"])
    assert summary.failures[0]["error"] == "nothing to write for a video; add overlay and/or mask to outputs="
    assert (
        main(
            [
                "segment",
                str(clip),
                "--out",
                str(tmp_path / "o2"),
                "--model",
                SMALL,
                "--weights",
                "random",
                "--outputs",
                "figure",
                "-q",
            ]
        )
        == 1
    )
    assert (
        f"error: {clip}: nothing to write for a video; add overlay and/or mask to --outputs" in capsys.readouterr().err
    )


# ---------------------------------------------------------------- decoder warnings


def tiff_with_a_tag_larger_than_the_file(path, image: Image.Image) -> None:
    """A TIFF whose ImageDescription claims 10 MB of text: Pillow warns "Tag data larger than
    file" and decodes the pixels anyway."""
    buf = io.BytesIO()
    image.save(buf, format="TIFF", tiffinfo={270: "a description longer than four bytes"})
    data = bytearray(buf.getvalue())
    assert data[:2] == b"II"
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * k
        if struct.unpack_from("<H", data, entry)[0] == 270:
            struct.pack_into("<I", data, entry + 4, 10_000_000)
    path.write_bytes(bytes(data))


WARNING = "UserWarning: Tag data larger than file. Skipping tag 270"


def test_decoder_warnings_go_to_the_summary_not_the_console(tmp_path, photos, capsys, weights_file):
    src = tmp_path / "in"
    src.mkdir()
    tiff_with_a_tag_larger_than_the_file(src / "odd.tif", photos[1])
    photos[0].save(src / "plain.png")
    args = ["segment", str(src), "--model", SMALL, "--weights", str(weights_file(SMALL)), "--outputs", "mask", "-q"]
    with warnings.catch_warnings(record=True) as shown:  # what would reach the console
        warnings.simplefilter("always")
        assert main([*args, "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert not [w for w in shown if "Tag data" in str(w.message)]
    assert "Tag data" not in err and "UserWarning" not in err
    entries = {
        os.path.basename(e["input"]): e for e in json.loads((tmp_path / "out" / "summary.json").read_text())["images"]
    }
    assert entries["odd.tif"]["warnings"] == [WARNING]
    assert "warnings" not in entries["plain.png"]
    assert main([*args, "--out", str(tmp_path / "debug"), "--debug"]) == 0
    assert f"warning: {src / 'odd.tif'}: {WARNING}" in capsys.readouterr().err.splitlines()


def test_warnings_are_kept_per_item_across_reading_threads(tmp_path, photos, weights_file):
    src = tmp_path / "in"
    src.mkdir()
    for k in range(6):  # odd and plain files interleaved, read by 3 threads at once
        if k % 2:
            tiff_with_a_tag_larger_than_the_file(src / f"{k}.tif", photos[k % 3].resize((96, 64)))
        else:
            photos[k % 3].resize((96, 64)).save(src / f"{k}.png")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        summary = segment(
            src, tmp_path / "out", model=SMALL, weights=weights_file(SMALL), outputs=["mask"], workers=3, batch_size=2
        )
    assert not [w for w in shown if "Tag data" in str(w.message)]
    assert {os.path.basename(e["input"]): e.get("warnings") for e in summary.items} == {
        f"{k}.{'tif' if k % 2 else 'png'}": ([WARNING] if k % 2 else None) for k in range(6)
    }


def test_the_router_routes_by_thread_and_restores_showwarning():
    from seglens.pipeline._warnings import capture, routing

    before = warnings.showwarning
    sinks: dict[int, list[str]] = {k: [] for k in range(4)}
    start = threading.Barrier(5)

    def reader(k: int) -> None:
        start.wait()
        with capture(sinks[k]):
            for _ in range(50):
                warnings.warn(f"from thread {k}", UserWarning, stacklevel=1)
                time.sleep(0)

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with routing():
            threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            start.wait()
            warnings.warn("from the main thread", UserWarning, stacklevel=1)  # not captured: shown
            for t in threads:
                t.join()
    assert sinks == {k: [f"UserWarning: from thread {k}"] for k in range(4)}
    assert [str(w.message) for w in shown] == ["from the main thread"]
    assert warnings.showwarning is before


# ---------------------------------------------------------------- one background rule


def test_one_background_rule_for_overlays_legends_and_palettes():
    from seglens.inference import SegmentationResult
    from seglens.video import _legend_classes
    from seglens.visualize import background_index, class_stats, palette_for, voc_palette

    labels = np.array([[0, 0, 1, 2]], dtype=np.uint8)
    image = Image.fromarray(np.full((1, 4, 3), 200, np.uint8))
    for categories, background in [
        (("__background__", "cat", "dog"), 0),
        (("Unlabeled", "cat", "dog"), 0),
        (("class 0", "class 1", "class 2"), 0),  # a torchvision head without names: 0 is background
        (("wall", "cat", "dog"), None),
    ]:
        assert background_index(categories) == background
        result = SegmentationResult(labels=labels, image=image, categories=categories, palette=voc_palette(256))
        untinted = (result.overlay(0.5) == 200).all(axis=-1)[0]
        assert bool(untinted[0]) is (background == 0)
        legend = [s.index for s in _legend_classes(class_stats(labels, categories, voc_palette(256)), categories)]
        assert legend == ([1, 2] if background == 0 else [0, 1, 2])
        assert (tuple(palette_for(categories)[0]) == (0, 0, 0)) is (background == 0)


def test_a_journal_line_cut_short_by_a_kill_is_ignored(tmp_path):
    header = {"journal": 1, "settings": {"model": SMALL}, "options": {}}
    entry = {"input": "a.png", "width": 1, "height": 1, "seconds": 0.1, "classes": [], "outputs": {"mask": "a.png"}}
    (tmp_path / JOURNAL).write_text(
        json.dumps(header) + "\n" + json.dumps({"entry": entry}) + "\n" + '{"entry": {"input": "b.p', encoding="utf-8"
    )
    assert read_journal(tmp_path) == (header, [entry])
    assert read_journal(tmp_path / "missing") == (None, [])
