"""The report of ``seglens compare``: ``compare.json``, ``compare.md``, a self-contained
``compare.html``, ``plots/class_deltas.png`` and the disagreement panels ``disagree/NN.png``.

Everything but the panels renders the ``compare.json`` dict (:meth:`seglens.compare.CompareResult.to_dict`),
so a report can be rendered again from the json alone; the panels are drawn from pixels with
Pillow (:func:`write_panels`). Tables, escaping and the page's style are :mod:`seglens.report`'s.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from .io import atomic_open, write_json
from .report import _CSS, _data_uri, _h, _html_table, _md, _md_table, _mpl, _pct, _png, _read_panel, _signed, _Table
from .visualize import colorize

__all__ = ["plot_class_deltas", "render_html", "render_markdown", "write_panels", "write_report"]

_MARK = "*"  # after a delta whose interval excludes 0
_PANEL_PX = 280  # long side of each picture in a disagreement panel (small images are enlarged)
_IGNORED = (224, 224, 192)  # VOC's void colour, as visualize.error_map
_OTHER_RIGHT, _FIRST_RIGHT, _BOTH_WRONG = (0, 190, 0), (230, 0, 200), (250, 210, 0)


# --- tables ----------------------------------------------------------------------------------


def _ci(delta: Mapping[str, Any] | None) -> str:
    if delta is None or delta.get("ci") is None:
        return "n/a"
    lo, hi = delta["ci"]
    return f"[{lo:+.2f}, {hi:+.2f}]"


def _delta(delta: Mapping[str, Any] | None) -> str:
    if delta is None or delta.get("delta") is None:
        return "n/a"
    return _signed(delta["delta"]) + (f" {_MARK}" if delta.get("excludes_zero") else "")


def _dataset(d: Mapping[str, Any] | None) -> str:
    if d is None:
        return "unknown dataset"
    return (d["kind"] if d.get("split") is None else f"{d['kind']} {d['split']}") + f" at {d['root']}"


def summary_line(data: Mapping[str, Any]) -> str:
    """One line: the configurations, the dataset, the images and the bootstrap."""
    names = " vs ".join(c["name"] for c in data["configs"])
    d, b = data["dataset"], data["bootstrap"]
    images = "?" if d is None else f"{d['images']:,}"
    boot = (f"paired bootstrap over images, {b['resamples']} resamples (seed {b['seed']}), "
            f"{100 * b['level']:g}% intervals" if b["resamples"] else "no bootstrap")  # fmt: skip
    return f"{names} on {_dataset(d)}: {images} images, {data['protocol'] or '?'} protocol; {boot}."


def _input_size(c: Mapping[str, Any]) -> str:
    if c["source"] != "run":
        return "n/a"
    return "the weights' resize" if c["scale"] is None else f"scale {c['scale']:g}"


def _config_table(data: Mapping[str, Any]) -> _Table:
    rows = tuple(
        (c["name"], c["source"], c["model"], c["weights"], f"{c['backend'] or '?'} {c['precision'] or '?'}",
         c["tta"] or "none", c["refine"] or "none", _input_size(c))
        for c in data["configs"]
    )  # fmt: skip
    spec = tuple(f"{c['name']}: {c['spec']}" for c in data["configs"])
    headers = ("name", "source", "model", "weights", "backend, precision", "TTA", "refine", "input size")
    return _Table("Configurations", headers, rows, "llllllll", spec)


def _score_table(data: Mapping[str, Any]) -> _Table:
    deltas = {d["config"]: d for d in data["deltas"]}
    rows = []
    for c in data["configs"]:
        d = deltas.get(c["name"])
        if d is None:  # the baseline
            rows.append((c["name"], _pct(c["miou"]), "baseline", "", _pct(c["pixel_acc"]), "baseline", ""))
            continue
        rows.append((c["name"], _pct(c["miou"]), _delta(d["miou"]), _ci(d["miou"]), _pct(c["pixel_acc"]),
                     _delta(d["pixel_acc"]), _ci(d["pixel_acc"])))  # fmt: skip
    base = data["configs"][0]["name"]
    level = f"{100 * data['bootstrap']['level']:g}%"
    note = (
        f"Deltas are in percentage points against {base}; {level} interval of the paired bootstrap over images; "
        f"{_MARK}: the interval excludes 0, so the difference is unlikely to be chance on images like these."
    )
    headers = ("config", "mIoU", "Δ mIoU", f"{level} CI", "pixel acc", "Δ pixel acc", f"{level} CI")
    return _Table("Scores (%)", headers, tuple(rows), "lrrrrrr", (note,))


def _class_table(data: Mapping[str, Any]) -> _Table:
    configs, deltas = data["configs"], data["deltas"]
    headers: tuple[str, ...] = ("class", configs[0]["name"])
    for c, d in zip(configs[1:], deltas):
        headers += (c["name"], f"Δ {c['name']}-{d['versus']}", "CI")
    rows = []
    for name in data["class_names"]:
        row = [name, _pct(configs[0]["per_class_iou"][name])]
        for c, d in zip(configs[1:], deltas):
            x = d["per_class_iou"][name]
            row += [_pct(c["per_class_iou"][name]), _delta(x), _ci(x)]
        rows.append(tuple(row))
    note = f"n/a: the class is absent (neither in the ground truth nor predicted). {data['absent_rule']}"
    return _Table("Per class IoU (%)", headers, tuple(rows), "l" + "r" * (len(headers) - 1), (note,), "class_deltas")


def _timing_table(data: Mapping[str, Any]) -> _Table:
    def ms(x):
        return "n/a" if x is None else f"{x:.1f}"

    rows = []
    for c in data["configs"]:
        if c["source"] != "run":
            rows.append((c["name"], "not measured (eval folder)", "", "", ""))
            continue
        speed = "n/a" if c["images_per_s"] is None else f"{c['images_per_s']:.2f}"
        rows.append((c["name"], speed, ms(c["model_ms_median"]), ms(c["model_ms_mean"]), ms(c["end_to_end_ms_median"])))
    headers = ("config", "images/s (end to end)", "model median ms", "model mean ms", "end-to-end median ms")
    return _Table("Speed, measured in this run", headers, tuple(rows), "lrrrr")


def _skipped_table(data: Mapping[str, Any]) -> _Table | None:
    if not data["skipped"]:
        return None
    rows = tuple((str(s["index"]), s["error"]) for s in data["skipped"])
    return _Table("Skipped images (unreadable; left out for every configuration)", ("index", "error"), rows, "rl")


def _tables(data: Mapping[str, Any]) -> list[_Table]:
    tables = [_config_table(data), _score_table(data), _class_table(data), _timing_table(data), _skipped_table(data)]
    return [t for t in tables if t is not None]


def _panels_note(data: Mapping[str, Any]) -> str:
    runs = [c["name"] for c in data["configs"] if c["source"] == "run"]
    if len(runs) < 2:
        return "No panels: they need two or more configurations run here (eval folders keep no predictions)."
    return (
        f"Images where {', '.join(runs[1:])} differ most from {runs[0]} (share of the scored pixels). Each panel: "
        f"image | ground truth | {' | '.join(runs)} | where each differs from {runs[0]}: green where it is right and "
        f"{runs[0]} wrong, magenta where {runs[0]} is right and it is wrong, yellow where both are wrong; "
        "beige: no ground truth."
    )


def _panel_caption(g: Mapping[str, Any]) -> str:
    parts = ", ".join(f"{k} {100 * v:.1f}%" for k, v in g["fractions"].items())
    return f"{g['rank']}. {g['name']}: {100 * g['fraction']:.1f}% of the scored pixels differ ({parts})"


# --- the plot --------------------------------------------------------------------------------


def plot_class_deltas(data: Mapping[str, Any]) -> Figure | None:
    """Per-class IoU deltas against the first configuration, one bar per other configuration,
    with the bootstrap interval as an error bar; None when no class has a delta."""
    classes = list(data["class_names"])
    deltas = data["deltas"]
    if not any(d["per_class_iou"][c]["delta"] is not None for d in deltas for c in classes):
        return None
    k = len(deltas)
    fig = Figure(figsize=(7.5, min(0.22 * len(classes) * k + 0.3 * len(classes) + 1.6, 60.0)), layout="constrained")
    ax = fig.add_subplot()
    colors = colormaps["tab10"].colors
    height = 0.8 / k
    for j, d in enumerate(deltas):
        y = np.arange(len(classes))[::-1] + (k - 1 - 2 * j) * height / 2
        values = [d["per_class_iou"][c]["delta"] for c in classes]
        shown = [i for i, v in enumerate(values) if v is not None]
        v = np.array([values[i] for i in shown], dtype=float)
        err = np.zeros((2, len(shown)))
        for col, i in enumerate(shown):
            ci = d["per_class_iou"][classes[i]]["ci"]
            if ci is not None:
                err[:, col] = (max(0.0, v[col] - ci[0]), max(0.0, ci[1] - v[col]))
        ax.barh(y[shown], v, height=height, color=colors[j % len(colors)], xerr=err, capsize=2,
                error_kw={"elinewidth": 0.8}, label=_mpl(f"{d['config']} - {d['versus']}"))  # fmt: skip
    ax.axvline(0, color="0.3", linewidth=0.8)
    fontsize = "small" if len(classes) <= 40 else "x-small"
    ax.set_yticks(np.arange(len(classes))[::-1], [_mpl(c) for c in classes], fontsize=fontsize)
    ax.set(xlabel="IoU delta (percentage points)", title="Per-class IoU difference with its bootstrap interval")
    ax.legend(loc="best", fontsize="small")
    return fig


# --- the panels ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _font(size: int):
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def _text_width(text: str, font) -> float:
    return ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)


def _differ(image: np.ndarray, target: np.ndarray, first: np.ndarray, other: np.ndarray, n: int) -> np.ndarray:
    gray = np.asarray(Image.fromarray(image).convert("L"))
    out = np.repeat((gray // 2)[..., None], 3, axis=2)
    valid = target < n
    differ = (first != other) & valid
    out[differ & (other == target)] = _OTHER_RIGHT
    out[differ & (first == target)] = _FIRST_RIGHT
    out[differ & (first != target) & (other != target)] = _BOTH_WRONG
    out[~valid] = _IGNORED
    return out


def _panel(g, title: str, class_names: Sequence[str], palette: np.ndarray | None, ignore_index: int) -> Image.Image:
    """image | ground truth | the first prediction, then each other prediction beside where it
    differs from the first: one row for two configurations, a grid of 4 columns for more (each
    tile titled), the classes present below."""
    n = len(class_names)
    names = list(g.preds)
    h, w = g.target.shape
    scale = _PANEL_PX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pictures = [("image", g.image, False), ("ground truth", colorize(g.target, palette), True),
                (names[0], colorize(g.preds[names[0]], palette), True)]  # fmt: skip
    for k in names[1:]:
        pictures.append((k, colorize(g.preds[k], palette), True))
        pictures.append((f"{k} vs {names[0]}", _differ(g.image, g.target, g.preds[names[0]], g.preds[k], n), True))
    cols = len(pictures) if len(pictures) <= _ONE_ROW else _GRID_COLUMNS
    rows = -(-len(pictures) // cols)
    font, small = _font(14), _font(11)
    pad, gap, top, label = 8, 10, 30, 18
    tile_h = label + size[1] + gap
    present = sorted({int(c) for a in (g.target, *g.preds.values()) for c in np.unique(a) if c < n})
    per_row = max(1, (cols * (size[0] + gap)) // 150)
    legend_rows = -(-len(present) // per_row)
    width = max(pad * 2 + cols * size[0] + (cols - 1) * gap, round(_text_width(title, font)) + 2 * pad)
    legend_top = top + rows * tile_h
    canvas = Image.new("RGB", (width, legend_top + 18 * legend_rows + pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), title, fill="black", font=font)
    for k, (text, array, nearest) in enumerate(pictures):
        r, c = divmod(k, cols)
        x, y = pad + c * (size[0] + gap), top + r * tile_h
        im = Image.fromarray(np.ascontiguousarray(array))
        if im.size != size:
            im = im.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)
        draw.text((x, y), text, fill="black", font=small)
        canvas.paste(im, (x, y + label))
    colours = colorize(np.array([present], dtype=np.uint8), palette)[0] if present else []
    for k, (c, rgb) in enumerate(zip(present, colours)):
        r, col = divmod(k, per_row)
        x, y = pad + col * 150, legend_top + 18 * r
        draw.rectangle((x, y + 2, x + 18, y + 12), fill=tuple(int(v) for v in rgb), outline=(102, 102, 102))
        draw.text((x + 24, y), class_names[c], fill="black", font=small)
    return canvas


_ONE_ROW = 5  # two configurations: image | GT | A | B | B vs A in one row
_GRID_COLUMNS = 4  # more: a grid, so seven configurations are not one 4000-pixel-wide strip


def write_panels(
    out_dir: Path, disagreements: Sequence[Any], class_names: Sequence[str], palette: np.ndarray | None, *,
    ignore_index: int = 255,
) -> list[str | None]:  # fmt: skip
    """Draw each disagreement (with pixels) as ``disagree/NN.png`` under ``out_dir``; returns the
    files relative to out_dir, in order (None for one without pixels)."""
    files: list[str | None] = []
    for rank, g in enumerate(disagreements, 1):
        if g.image is None or g.target is None or not g.preds:
            files.append(None)
            continue
        rel = f"disagree/{rank:02d}.png"
        title = f"{rank}. {g.name}: {100 * g.fraction:.1f}% of the scored pixels differ"
        with atomic_open(Path(out_dir) / rel) as f:
            _panel(g, title, class_names, palette, ignore_index).save(f, format="PNG")
        files.append(rel)
    return files


# --- Markdown and HTML -----------------------------------------------------------------------


def _reading(data: Mapping[str, Any]) -> list[str]:
    return [
        "Each configuration is scored as seglens eval scores it (same inputs, labels and arithmetic), on the same "
        "images in the same run, so its numbers equal eval's and its differences are paired image by image.",
        "The interval is the spread of the difference over resamples of the images: it answers whether the "
        "difference would hold on other images like these, not whether it holds on other kinds of images.",
        *data["notes"],
    ]


def render_markdown(data: Mapping[str, Any], *, plots_dir_rel: str | None = None) -> str:
    """The text of ``compare.md`` from the ``compare.json`` dict; ``plots_dir_rel``: where the
    plot was written, relative to the report (None: no plot linked)."""
    out = [
        f"# seglens compare: {_md(' vs '.join(c['name'] for c in data['configs']))}",
        "",
        _md(summary_line(data)),
        "",
    ]
    for table in _tables(data):
        image = None
        if table.plot and plots_dir_rel is not None:
            image = f"![Per-class IoU deltas]({quote(f'{plots_dir_rel}/{table.plot}.png')})"
        out += _md_table(table, image)
    out += ["## Reading this report", ""] + [f"- {_md(line)}" for line in _reading(data)] + [""]
    out += ["## Where they disagree most", "", _md(_panels_note(data)), ""]
    for g in data["disagreements"]:
        out += [_md(_panel_caption(g)), ""]
        if g["file"]:
            out += [f"![{_md(g['name'])}]({quote(g['file'])})", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def render_html(data: Mapping[str, Any], *, out_dir: Path, pngs: Mapping[str, bytes] | None = None) -> str:
    """The text of ``compare.html``: one self-contained page; the plot (``pngs``, default drawn
    now) and the panels (read from ``out_dir``) embedded as data URIs; every string escaped."""
    pngs = _render_plots(data) if pngs is None else pngs
    title = _h("seglens compare: " + " vs ".join(c["name"] for c in data["configs"]))
    parts = [f"<h1>{title}</h1>", f'<p class="summary">{_h(summary_line(data))}</p>']
    for table in _tables(data):
        image = ""
        if table.plot in pngs:
            image = f'<p><img src="{_data_uri(pngs[table.plot])}" alt="Per-class IoU deltas"></p>\n'
        parts.append(_html_table(table, image))
    parts.append("<h2>Reading this report</h2>\n<ul>" + "".join(f"<li>{_h(s)}</li>" for s in _reading(data)) + "</ul>")
    parts.append(f'<h2>Where they disagree most</h2>\n<p class="note">{_h(_panels_note(data))}</p>')
    for g in data["disagreements"]:
        picture = ""
        if g["file"]:
            png = _read_panel(Path(out_dir), g["file"])
            picture = (f'<p class="missing">panel missing: {_h(g["file"])}</p>' if png is None
                       else f'<img src="{_data_uri(png)}" alt="{_h(g["name"])}">')  # fmt: skip
        parts.append(f"<figure>{picture}<figcaption>{_h(_panel_caption(g))}</figcaption></figure>")
    head = f'<head><meta charset="utf-8"><title>{title}</title>\n<style>{_CSS}</style></head>'
    return f'<!DOCTYPE html>\n<html lang="en">{head}\n<body>\n' + "\n".join(parts) + "\n</body></html>\n"


def _render_plots(data: Mapping[str, Any]) -> dict[str, bytes]:
    fig = plot_class_deltas(data)
    return {} if fig is None else {"class_deltas": _png(fig)}


def write_report(data: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``compare.json``, ``compare.md``, ``compare.html`` and ``plots/class_deltas.png``
    (when a class has a delta) into ``out_dir``, each atomically; the panels are
    :func:`write_panels`'. Returns the paths by key (``json``, ``md``, ``html``, ``class_deltas``)."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "compare.json", "md": out_dir / "compare.md", "html": out_dir / "compare.html"}
    write_json(paths["json"], dict(data))
    pngs = _render_plots(data)
    for key, png in pngs.items():
        paths[key] = out_dir / "plots" / f"{key}.png"
        with atomic_open(paths[key]) as f:
            f.write(png)
    with atomic_open(paths["md"], "w") as f:
        f.write(render_markdown(data, plots_dir_rel="plots" if pngs else None))
    with atomic_open(paths["html"], "w") as f:
        f.write(render_html(data, out_dir=out_dir, pngs=pngs))
    return paths
