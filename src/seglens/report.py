"""Human-readable evaluation reports: ``report.md``, a self-contained ``report.html`` and plots.

Everything here renders an :class:`~seglens.evaltypes.EvalResult` (what :func:`seglens.evaluate`
returns); a ``metrics.json`` dict is read with ``EvalResult.from_dict`` first, so every public
function takes either. Nothing is computed from images. numpy + matplotlib only (no torch, no
pyplot): figures are ``matplotlib.figure.Figure`` objects, and nothing is printed or shown.

Percentages get one decimal, pixel counts thousands separators, undefined values (``None``)
read "n/a". Every string from the result (class names, image names, paths) is escaped for where
it lands: backslash escapes in Markdown, entities in HTML, ``\\$`` in matplotlib text (where a
pair of ``$`` would start mathtext).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from seglens.evaltypes import BoundaryAnalysis, ClassScore, DatasetInfo, EvalResult, SizeAnalysis
from seglens.io import atomic_open, write_json
from seglens.visualize import voc_palette

__all__ = [
    "plot_boundary",
    "plot_confusion",
    "plot_per_class_iou",
    "plot_size",
    "render_html",
    "render_markdown",
    "summary_line",
    "write_report",
]

_MAX_TICK_LABELS = 40  # more classes than this: the confusion axes name every k-th class only
_MAX_CELL_TEXT = 25  # up to this many classes, confusion cells print their percentage
_MAX_PROBLEMS = 50  # label problems listed in the report; metrics.json keeps all of them
_BUCKETS = ("small", "medium", "large")
_MD_SPECIAL = "\\`*[]<|&"  # stops links, raw HTML, entities and broken tables; "_" and ">" stay readable
_PANELS = "Lowest per-image mIoU first. Each panel: image | ground truth | prediction | error map."
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0}th,td{padding:.25em .7em;border-bottom:1px solid #e4e4e4}
th{background:#f4f4f4;text-align:left}.r{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafafa}img{max-width:100%;height:auto}figure{margin:1em 0}
.summary{font-size:1.1em;font-weight:600}.note{color:#555}.missing{color:#a00}
"""

Metrics = EvalResult | Mapping[str, Any]  # what the public functions take
_PlotFn = Callable[[EvalResult], Figure]


@dataclass(frozen=True)
class _Table:
    """One report section as plain strings; rendered to Markdown or HTML."""

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str  # "l" or "r" per column
    notes: tuple[str, ...] = ()  # paragraphs under the table
    plot: str | None = None  # key of the plot shown under the title


def _result(metrics: Metrics) -> EvalResult:
    return metrics if isinstance(metrics, EvalResult) else EvalResult.from_dict(metrics)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}"


def _count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _md(text: object) -> str:
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in str(text)).replace("\n", " ")


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def _mpl(text: object) -> str:
    return str(text).replace("$", r"\$")


def _dataset(d: DatasetInfo) -> str:
    return d.kind if d.split is None else f"{d.kind} {d.split}"


def summary_line(metrics: Metrics) -> str:
    """One line: model, dataset, protocol, mIoU, pixel accuracy and the published pair if any.

    ``"deeplabv3_resnet50 on coco-voc val (5000 images, torchvision protocol): mIoU 66.1, pixel
    acc 92.3 (published 66.4 / 92.4)"``; a TTA run adds ``", TTA flip"`` inside the brackets.
    """
    r = _result(metrics)
    s = r.settings
    images = f"{s.dataset.images} image{'' if s.dataset.images == 1 else 's'}"
    tta = f", TTA {s.tta}" if s.tta else ""
    line = (
        f"{s.model} on {_dataset(s.dataset)} ({images}, {s.protocol} protocol{tta}): "
        f"mIoU {_pct(r.miou)}, pixel acc {_pct(r.pixel_acc)}"
    )
    if r.published:
        line += f" (published {_pct(r.published.miou)} / {_pct(r.published.pixel_acc)})"
    return line


def _published_line(r: EvalResult) -> str | None:
    published = r.published
    if not published:
        return None
    pairs = ((published.miou, r.miou), (published.pixel_acc, r.pixel_acc))
    diff = [None if p is None or m is None else m - p for p, m in pairs]
    line = (
        f"published {_pct(published.miou)} / {_pct(published.pixel_acc)}, "
        f"measured {_pct(r.miou)} / {_pct(r.pixel_acc)} "
        f"(mIoU / pixel acc; difference {_signed(diff[0])} / {_signed(diff[1])}; source: {published.source})"
    )
    if r.settings.protocol != "torchvision":
        line += f"; the published numbers use the torchvision protocol, this run the {r.settings.protocol} one"
    return line


def _classes(r: EvalResult) -> list[ClassScore]:
    return sorted(r.per_class.values(), key=lambda c: c.index)


def _headline_table(r: EvalResult) -> _Table:
    rows = (
        ("mIoU", _pct(r.miou)),
        ("pixel accuracy", _pct(r.pixel_acc)),
        ("mean class accuracy", _pct(r.mean_acc)),
        ("frequency-weighted IoU", _pct(r.fwiou)),
        ("mean Dice", _pct(r.mean_dice)),
    )
    headers: tuple[str, ...] = ("metric", "measured")
    if r.published:
        headers += ("published",)
        extra = (_pct(r.published.miou), _pct(r.published.pixel_acc), "n/a", "n/a", "n/a")
        rows = tuple((*row, value) for row, value in zip(rows, extra))
    s, d, speed = r.settings, r.settings.dataset, r.images_per_s
    engine = ""  # the default torch fp32 path goes unsaid
    if (s.backend or "torch") != "torch" or (s.precision or "fp32") != "fp32":
        engine = f", backend {s.backend or 'torch'} {s.precision or 'fp32'}"
    run = (
        f"Model {s.model}, weights {s.weights} (SHA-256 {s.weights_sha256 or 'n/a'}), "
        f"device {s.device}{engine}, TTA {s.tta or 'none'}"
        f"{f', refine {s.refine}' if getattr(s, 'refine', None) else ''}. Dataset {_dataset(d)} "
        f"at {d.root}: {d.images:,} images in {r.seconds:.1f} s"
        f"{'' if speed is None else f' ({speed:.2f} images/s)'}; seglens {s.seglens_version}."
    )
    return _Table("Headline metrics (%)", headers, rows, "lrr"[: len(headers)], (run,))


def _class_table(r: EvalResult) -> _Table:
    rows = []
    for c in _classes(r):
        iou = _pct(c.iou)
        if c.absent:
            iou = "absent" if c.iou is None else f"{iou} (absent)"
        rows.append((c.name, iou, _pct(c.acc), _pct(c.dice), _count(c.gt_pixels), _count(c.pred_pixels)))
    headers = ("class", "IoU", "acc", "Dice", "gt pixels", "pred pixels")
    return _Table("Per class (%)", headers, tuple(rows), "lrrrrr", (r.absent_rule,), "per_class_iou")


def _confusion_table(r: EvalResult) -> _Table:
    rows = tuple(
        (f"{c.gt} -> {c.pred}", _count(c.pixels), f"{_pct(c.fraction_of_gt)}% of {c.gt} pixels")
        for c in r.top_confusions
    )
    note = "In the heatmap rows are ground-truth classes and columns predictions; each row sums to 100%."
    headers = ("ground truth -> predicted", "pixels", "share")
    return _Table("Top confusions", headers, rows, "lrl", (note,), "confusion")


def _size_ranges(size: SizeAnalysis) -> dict[str, str]:
    low, high = size.thresholds  # areas are whole pixels: small < low <= medium < high <= large
    return {"small": f"under {low:,} px", "medium": f"{low:,} - {high - 1:,} px", "large": f"{high:,} px and over"}


def _size_table(r: EvalResult) -> _Table:
    ranges = _size_ranges(r.size)
    rows = []
    for name in _BUCKETS:
        b = r.size.buckets[name]
        rows.append(
            (
                f"{name} ({ranges[name]})",
                _count(b.regions),
                _count(b.pixels),
                _pct(b.pixel_recall),
                _pct(b.mean_region_recall),
            )
        )
    note = (
        f"Area: {r.size.unit}. Pixel recall: share of all the bucket's region pixels labelled with "
        "their class; mean region recall: the same share per region, averaged over regions."
    )
    headers = ("size", "regions", "pixels", "pixel recall", "mean region recall")
    return _Table("Object size (%)", headers, tuple(rows), "lrrrr", (note,), "size")


def _boundary_table(r: EvalResult) -> _Table:
    b = r.boundary
    rows = (
        (f"boundary band ({b.width} px)", _count(b.band_pixels), _pct(b.band_acc)),
        ("interior", _count(b.interior_pixels), _pct(b.interior_acc)),
    )
    note = f"The band holds the labelled pixels within {b.width} px of a ground-truth class boundary."
    return _Table("Boundaries (%)", ("region", "pixels", "accuracy"), rows, "lrr", (note,), "boundary")


def _tta_table(r: EvalResult) -> _Table | None:
    t = r.tta_comparison
    if not t:
        return None
    rows = (
        ("plain", _pct(t.plain.miou), _pct(t.plain.pixel_acc)),
        (f"TTA ({r.settings.tta or 'on'})", _pct(t.tta.miou), _pct(t.tta.pixel_acc)),
        ("gain", _signed(t.gain_miou), _signed(t.gain_pixel_acc)),
    )
    return _Table("Test-time augmentation (%)", ("run", "mIoU", "pixel acc"), rows, "lrr")


def _problem_table(r: EvalResult) -> _Table:
    problems = r.label_problems
    rows = tuple((p.name, p.path, p.kind, p.detail) for p in problems[:_MAX_PROBLEMS])
    notes = (
        f"{len(problems):,} label problem{'' if len(problems) == 1 else 's'} found."
        if problems
        else "No label problems found.",
    )
    if len(problems) > _MAX_PROBLEMS:
        notes += (f"The first {_MAX_PROBLEMS} are listed; all {len(problems):,} are in metrics.json.",)
    return _Table("Label problems", ("image", "path", "kind", "detail"), rows, "llll", notes)


def _size_reading(size: SizeAnalysis) -> str | None:
    small, large = size.buckets["small"], size.buckets["large"]
    if small.pixel_recall is None or large.pixel_recall is None:
        return None
    gap = large.pixel_recall - small.pixel_recall
    if gap >= 10:
        verdict = f"small objects are lost far more often ({gap:.1f} points lower)."
    elif gap >= 3:
        verdict = f"small objects are somewhat harder ({gap:.1f} points lower)."
    else:
        verdict = "object size makes little difference here."
    text = (
        f"Small objects: {_pct(small.pixel_recall)}% of pixels recalled vs {_pct(large.pixel_recall)}% for large ones; "
        f"{verdict}"
    )
    if small.mean_region_recall is not None:
        text += (
            f" The average small region has {_pct(small.mean_region_recall)}% of its pixels found "
            f"({small.regions:,} small regions)."
        )
    return text


def _boundary_reading(b: BoundaryAnalysis) -> str | None:
    if b.band_acc is None or b.interior_acc is None:
        return None
    text = (
        f"Within {b.width} px of a class boundary {_pct(b.band_acc)}% of pixels are correct vs "
        f"{_pct(b.interior_acc)}% inside regions."
    )
    band_errors = b.band_pixels * (100 - b.band_acc)
    errors = band_errors + b.interior_pixels * (100 - b.interior_acc)
    if errors > 0:
        pixel_share = 100 * b.band_pixels / (b.band_pixels + b.interior_pixels)
        error_share = 100 * band_errors / errors
        if error_share >= 50:
            where = "most mistakes are about where object edges lie (fine detail), not what the objects are"
        else:
            where = "most mistakes are inside regions (a wrong class), not at the edges"
        text += f" The band holds {_pct(pixel_share)}% of the pixels but {_pct(error_share)}% of the errors: {where}."
    return text


def _reading(r: EvalResult) -> list[str]:
    """The "reading this report" sentences; every claim is computed from the result."""
    lines = [
        f"{_pct(r.pixel_acc)}% of pixels are labelled correctly, while the class-averaged IoU is "
        f"{_pct(r.miou)}: pixel accuracy is dominated by the classes with most pixels."
    ]
    scored = [(c.iou, c.name) for c in _classes(r) if not c.absent and c.iou is not None]
    if len(scored) >= 2:
        (lo, lo_name), (hi, hi_name) = min(scored), max(scored)
        lines.append(f"Weakest class: {lo_name} (IoU {_pct(lo)}); strongest: {hi_name} (IoU {_pct(hi)}).")
    if r.top_confusions:
        c = r.top_confusions[0]
        lines.append(
            f"Largest confusion: {c.gt} -> {c.pred}, {_pct(c.fraction_of_gt)}% of {c.gt} pixels ({c.pixels:,} pixels)."
        )
    lines += [s for s in (_size_reading(r.size), _boundary_reading(r.boundary)) if s]
    if t := r.tta_comparison:
        lines.append(
            f"Test-time augmentation changes mIoU by {_signed(t.gain_miou)} points and pixel accuracy "
            f"by {_signed(t.gain_pixel_acc)}."
        )
    return lines


def _sections(r: EvalResult) -> list[_Table]:
    tables = [_class_table(r), _confusion_table(r), _size_table(r), _boundary_table(r)]
    tta = _tta_table(r)
    return tables + ([tta] if tta else [])


# --- plots ---------------------------------------------------------------------------------


def plot_confusion(metrics: Metrics) -> Figure:
    """Row-normalised confusion heatmap: cell (i, j) is the % of class i's ground-truth pixels
    predicted as j (``100 * cm[i, j] / cm[i].sum()``). Rows without ground truth are masked and
    drawn blank. Beyond 40 classes only every k-th class is named (at most 40 labels); up to 25
    classes every cell of at least 1% prints its value."""
    r = _result(metrics)
    cm = r.confusion_matrix.astype(np.float64)
    n = len(cm)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.ma.masked_invalid(cm * 100.0 / np.where(rows > 0, rows, np.nan))
    side = min(max(0.32 * n + 2.5, 5.0), 16.0)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["Blues"].with_extremes(bad="white")
    im = ax.imshow(norm, cmap=cmap, vmin=0, vmax=100, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="% of the row's ground-truth pixels", shrink=0.8)
    ticks = np.arange(0, n, max(1, math.ceil(n / _MAX_TICK_LABELS)))
    names = [_mpl(r.class_names[i]) for i in ticks]
    fontsize = "small" if n <= _MAX_CELL_TEXT else "x-small"
    ax.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)
    ax.set(xlabel="predicted", ylabel="ground truth", title="Confusion matrix (each row sums to 100%)")
    if n <= _MAX_CELL_TEXT:
        for i, j in zip(*np.nonzero(norm.filled(0) >= 1)):
            color = "white" if norm[i, j] > 60 else "0.15"
            ax.text(j, i, f"{norm[i, j]:.0f}", ha="center", va="center", fontsize=7, color=color)
    return fig


def plot_per_class_iou(metrics: Metrics) -> Figure:
    """Horizontal IoU bars, lowest at the bottom (bar k is the k-th lowest), each in its class's
    VOC colour with a dark outline; absent classes are left out; a dashed line marks the mIoU."""
    r = _result(metrics)
    scored = sorted((c.iou, c.index, c.name) for c in r.per_class.values() if not c.absent and c.iou is not None)
    palette = voc_palette() / 255.0
    colors = [palette[i] if i < len(palette) else (0.5, 0.5, 0.5) for _, i, _ in scored]
    fig = Figure(figsize=(7.0, min(0.28 * len(scored) + 1.4, 40.0)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(scored))
    ax.barh(y, [iou for iou, _, _ in scored], color=colors, edgecolor="0.2", linewidth=0.8)
    for yi, (iou, _, _) in zip(y, scored):
        ax.text(iou + 1, yi, _pct(iou), va="center", fontsize="small")
    fontsize = "small" if len(scored) <= _MAX_TICK_LABELS else "x-small"
    ax.set_yticks(y, [_mpl(name) for _, _, name in scored], fontsize=fontsize)
    if r.miou is not None:
        ax.axvline(r.miou, color="0.3", linestyle="--", linewidth=1, label=f"mIoU {_pct(r.miou)}")
        ax.legend(loc="lower right", fontsize="small")
    ax.set(xlim=(0, 110), ylim=(-0.6, len(scored) - 0.4), xlabel="IoU (%)", title="IoU per class")
    return fig


def plot_size(metrics: Metrics) -> Figure:
    """Pixel recall and mean region recall per size bucket (grouped bars), region counts above."""
    size = _result(metrics).size
    buckets = [size.buckets[name] for name in _BUCKETS]
    ranges = _size_ranges(size)
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(_BUCKETS))
    series = (
        ("pixel_recall", "pixel recall", "#4c72b0", -0.2),
        ("mean_region_recall", "mean region recall", "#dd8452", 0.2),
    )
    for key, label, color, offset in series:
        values = [np.nan if getattr(b, key) is None else getattr(b, key) for b in buckets]
        ax.bar(x + offset, values, width=0.4, color=color, edgecolor="0.2", linewidth=0.6, label=label)
    for xi, b in zip(x, buckets):
        top = max((getattr(b, key) for key, *_ in series if getattr(b, key) is not None), default=0)
        ax.text(xi, top + 2, f"{b.regions:,} regions", ha="center", fontsize="small")
    ax.set_xticks(x, [f"{name}\n{ranges[name]}" for name in _BUCKETS])
    ax.set(ylim=(0, 112), ylabel="recall (%)", title="Recall by object size")
    ax.legend(loc="upper left", fontsize="small", ncols=2)
    return fig


def plot_boundary(metrics: Metrics) -> Figure:
    """Accuracy in the boundary band vs the interior, band width in the title."""
    b = _result(metrics).boundary
    values = [np.nan if v is None else v for v in (b.band_acc, b.interior_acc)]
    fig = Figure(figsize=(5.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.bar([0, 1], values, width=0.6, color=["#c44e52", "#55a868"], edgecolor="0.2", linewidth=0.6)
    for xi, value, pixels in zip((0, 1), values, (b.band_pixels, b.interior_pixels)):
        if not np.isnan(value):
            ax.text(xi, value + 2, f"{value:.1f}%\n{pixels:,} px", ha="center", fontsize="small")
    ax.set_xticks([0, 1], ["boundary band", "interior"])
    ax.set(ylim=(0, 115), ylabel="pixel accuracy (%)", title=f"Accuracy near boundaries (band width {b.width} px)")
    return fig


def _plots(r: EvalResult) -> dict[str, tuple[str, _PlotFn]]:
    """The plots whose data is present: key -> (caption, plotting function)."""
    plots: dict[str, tuple[str, _PlotFn]] = {}
    if r.confusion_matrix.sum() > 0:
        plots["confusion"] = ("Confusion matrix", plot_confusion)
    if any(not c.absent and c.iou is not None for c in r.per_class.values()):
        plots["per_class_iou"] = ("IoU per class", plot_per_class_iou)
    if any(
        b.regions and (b.pixel_recall is not None or b.mean_region_recall is not None) for b in r.size.buckets.values()
    ):
        plots["size"] = ("Recall by object size", plot_size)
    if r.boundary.band_acc is not None or r.boundary.interior_acc is not None:
        plots["boundary"] = ("Accuracy near boundaries", plot_boundary)
    return plots


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _render_plots(r: EvalResult) -> dict[str, bytes]:
    return {key: _png(plot(r)) for key, (_, plot) in _plots(r).items()}


# --- Markdown ------------------------------------------------------------------------------


def _md_table(table: _Table, image: str | None = None) -> list[str]:
    out = [f"## {table.title}", ""] + ([image, ""] if image else [])
    if table.rows:
        out.append("| " + " | ".join(_md(h) for h in table.headers) + " |")
        out.append("|" + "|".join("---:" if a == "r" else "---" for a in table.align) + "|")
        out += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in table.rows]
        out.append("")
    return out + [line for note in table.notes for line in (_md(note), "")]


def render_markdown(metrics: Metrics, *, plots_dir_rel: str | None = None) -> str:
    """The text of ``report.md``.

    Args:
        metrics: the :class:`EvalResult`, or the metrics dict (the content of ``metrics.json``).
        plots_dir_rel: folder of the PNGs saved by ``write_report``, relative to the report
            (e.g. ``"plots"``); when given, each section embeds its plot (those with data only).
    """
    r = _result(metrics)
    plots = _plots(r) if plots_dir_rel is not None else {}
    out = [f"# seglens evaluation: {_md(r.settings.model)}", "", _md(summary_line(r)), ""]
    if (published := _published_line(r)) is not None:
        out += [_md(published), ""]
    out += _md_table(_headline_table(r))
    out += ["## Reading this report", ""] + [f"- {_md(line)}" for line in _reading(r)] + [""]
    for table in _sections(r):
        image = None
        if table.plot in plots:
            image = f"![{_md(plots[table.plot][0])}]({quote(f'{plots_dir_rel}/{table.plot}.png')})"
        out += _md_table(table, image)
    out += ["## Worst images", "", _PANELS, ""]
    for rank, w in enumerate(r.worst, 1):
        if w.file is None:  # not rendered (a result not written with out=)
            out += [f"{rank}. {_md(w.name)}: mIoU {_pct(w.miou)}", ""]
            continue
        target = quote(w.file)
        out += [f"{rank}. [{_md(w.name)}]({target}): mIoU {_pct(w.miou)}", ""]
        out += [f"   ![{_md(w.name)}]({target})", ""]
    out += _md_table(_problem_table(r))
    return "\n".join(out).rstrip("\n") + "\n"


# --- HTML ----------------------------------------------------------------------------------


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _html_table(table: _Table, image: str = "") -> str:
    head = "".join(f'<th class="{a}">{_h(h)}</th>' for a, h in zip(table.align, table.headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{a}">{_h(c)}</td>' for a, c in zip(table.align, row)) + "</tr>\n"
        for row in table.rows
    )
    grid = f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n" if table.rows else ""
    notes = "".join(f'<p class="note">{_h(n)}</p>\n' for n in table.notes)
    return f"<h2>{_h(table.title)}</h2>\n{image}{grid}{notes}"


def _read_panel(out_dir: Path, file: str) -> bytes | None:
    """The PNG at ``out_dir / file``; None if missing, not a PNG, or outside out_dir."""
    root = out_dir.resolve()
    path = (root / file).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    data = path.read_bytes()
    return data if data.startswith(b"\x89PNG\r\n\x1a\n") else None


def _html(r: EvalResult, out_dir: Path, pngs: dict[str, bytes]) -> str:
    captions = {key: caption for key, (caption, _) in _plots(r).items()}
    title = _h(f"seglens evaluation: {r.settings.model}")
    parts = [f"<h1>{title}</h1>", f'<p class="summary">{_h(summary_line(r))}</p>']
    if (published := _published_line(r)) is not None:
        parts.append(f"<p>{_h(published)}</p>")
    parts.append(_html_table(_headline_table(r)))
    parts.append("<h2>Reading this report</h2>\n<ul>" + "".join(f"<li>{_h(s)}</li>" for s in _reading(r)) + "</ul>")
    for table in _sections(r):
        image = ""
        if table.plot in pngs:
            image = f'<p><img src="{_data_uri(pngs[table.plot])}" alt="{_h(captions[table.plot])}"></p>\n'
        parts.append(_html_table(table, image))
    parts.append(f'<h2>Worst images</h2>\n<p class="note">{_h(_PANELS)}</p>')
    for rank, w in enumerate(r.worst, 1):
        caption = f"{rank}. {_h(w.name)}: mIoU {_pct(w.miou)}"
        if w.file is None:  # not rendered (a result not written with out=)
            parts.append(f"<figure><figcaption>{caption}</figcaption></figure>")
            continue
        data = _read_panel(out_dir, w.file)
        if data is None:
            picture = f'<p class="missing">panel image missing or not a PNG: {_h(w.file)}</p>'
        else:
            picture = f'<img src="{_data_uri(data)}" alt="{_h(w.name)}">'
        parts.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
    parts.append(_html_table(_problem_table(r)))
    head = f'<head><meta charset="utf-8"><title>{title}</title>\n<style>{_CSS}</style></head>'
    return f'<!DOCTYPE html>\n<html lang="en">{head}\n<body>\n' + "\n".join(parts) + "\n</body></html>\n"


def render_html(metrics: Metrics, *, out_dir: Path) -> str:
    """The text of ``report.html``: one self-contained page (inline CSS, no scripts, no external
    URLs). Plots and the worst-image panels (read from ``out_dir / worst[i].file``; a file
    that is missing, not a PNG or outside ``out_dir`` is named instead of shown) are embedded as
    base64 PNG data URIs. Every string from the result is HTML-escaped."""
    r = _result(metrics)
    return _html(r, Path(out_dir), _render_plots(r))


def write_report(metrics: Metrics, out_dir: Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md``, ``report.html`` and ``plots/*.png`` into out_dir.

    The worst-image panels are not drawn here (they need the model's palette:
    :func:`seglens.evaluation.write_worst`, which ``evaluate(out=)`` runs first); the report
    links and embeds those named by ``worst[i].file``. Each file is written atomically
    (``seglens.io``). Plots whose data is missing (no ground truth pixels, no object regions, no
    boundary pixels) are neither written nor linked.

    Returns:
        Paths by key: ``"metrics"``, ``"md"``, ``"html"``, plus one per plot written
        among ``"confusion"``, ``"per_class_iou"``, ``"size"``, ``"boundary"`` (``plots/{key}.png``).
    """
    r = _result(metrics)
    out_dir = Path(out_dir)
    paths = {"metrics": out_dir / "metrics.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    write_json(paths["metrics"], r.to_dict())
    pngs = _render_plots(r)
    for key, png in pngs.items():
        paths[key] = out_dir / "plots" / f"{key}.png"
        with atomic_open(paths[key]) as f:
            f.write(png)
    with atomic_open(paths["md"], "w") as f:
        f.write(render_markdown(r, plots_dir_rel="plots"))
    with atomic_open(paths["html"], "w") as f:
        f.write(_html(r, out_dir, pngs))
    return paths
