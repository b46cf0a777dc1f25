"""Writers for the small committed files (metrics JSON, plot CSVs) and their PNG versions.

Writes are atomic (temp file + ``os.replace``) so a killed stage never leaves a half-written file that
DVC or git would pick up. Floats are rounded to 6 significant digits so reruns that differ only in the
last bits do not show up as diffs. PNGs exist because ``dvc plots show`` loads its chart library from a
CDN (blank offline). matplotlib is imported lazily and without pyplot (no global figure state).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

SIG_DIGITS = 6


def round_floats(data, digits: int = SIG_DIGITS):
    """Floats to ``digits`` significant digits (NaN/inf -> None: JSON has no such values); numpy/torch
    scalars to Python numbers, tuples to lists, Paths to strings; everything else unchanged."""
    if isinstance(data, bool) or data is None or isinstance(data, (int, str)):
        return data
    if isinstance(data, float):
        return float(f"{data:.{digits}g}") if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {str(k): round_floats(v, digits) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [round_floats(v, digits) for v in data]
    if isinstance(data, Path):
        return str(data)
    if hasattr(data, "item") and getattr(data, "ndim", None) == 0:
        return round_floats(data.item(), digits)
    if hasattr(data, "tolist"):
        return round_floats(data.tolist(), digits)
    return data


def _atomic_write(path: Path | str, data: bytes) -> Path:
    """Write to a temp file in the same folder, then rename over ``path`` (atomic on POSIX and Windows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path | str, data) -> Path:
    """Sorted keys, 2-space indent, trailing newline, floats rounded (``round_floats``)."""
    text = json.dumps(round_floats(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
    return _atomic_write(path, text.encode())


def write_csv(path: Path | str, rows: Sequence[Mapping], fieldnames: Sequence[str] | None = None) -> Path:
    """Columns: ``fieldnames`` or the union of row keys in first-seen order; missing cells empty."""
    columns = list(fieldnames) if fieldnames is not None else list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    if columns:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if (v := round_floats(row.get(k))) is None else v for k in columns})
    return _atomic_write(path, buf.getvalue().encode())


def read_csv(path: Path | str) -> list[dict[str, object]]:
    """Rows with numeric cells as floats (empty cells as None, text unchanged)."""
    def cell(s: str):
        if s == "":
            return None
        try:
            return float(s)
        except ValueError:
            return s

    with open(path, newline="") as f:
        return [{k: cell(v) for k, v in row.items()} for row in csv.DictReader(f)]


# ----------------------------------------------------------------------------------------------- PNGs
def _figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.figure import Figure  # lazy; Figure + savefig uses the Agg canvas, no pyplot needed

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig, ax, png_path: Path | str, plotted: bool) -> Path:
    if plotted:
        ax.legend(fontsize="small")
    else:  # still write the file: it is a DVC out and must exist
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return _atomic_write(png_path, buf.getvalue())


def _points(rows: Iterable[Mapping], x: str, y: str) -> tuple[list[float], list[float], list[Mapping]]:
    xs, ys, kept = [], [], []
    for r in rows:
        if isinstance(r.get(x), float) and isinstance(r.get(y), float):
            xs.append(r[x])
            ys.append(r[y])
            kept.append(r)
    return xs, ys, kept


def _label(csv_path: Path, y: str, several: bool) -> str:
    return f"{csv_path.stem.removesuffix('_epochs')}: {y}" if several else y


def png_line_plot(csv_path: Path | str | Sequence[Path | str], x: str, ys: Sequence[str], png_path: Path | str,
                  title: str, *, ylabel: str = "", concat: bool = False) -> Path:
    """Columns ``ys`` against ``x`` from one CSV or several (one line per file and column, labelled by the
    file stem). ``concat``: each file's x continues after the previous file's last x (stages in a row),
    with a dotted line at each boundary."""
    paths = [Path(csv_path)] if isinstance(csv_path, (str, Path)) else [Path(p) for p in csv_path]
    fig, ax = _figure(title, x, ylabel or ", ".join(ys))
    offset, plotted, colors = 0.0, False, {}
    for path in paths:
        rows = read_csv(path) if path.exists() else []
        end = offset
        for y in ys:
            xs, vals, _ = _points(rows, x, y)
            if not xs:
                continue
            if concat:  # one colour and one legend entry per column across all files
                xs = [v + offset for v in xs]
                label = None if y in colors else y
                ax.plot(xs, vals, marker="o", markersize=3, label=label, color=colors.setdefault(y, f"C{len(colors)}"))
            else:
                ax.plot(xs, vals, marker="o", markersize=3, label=_label(path, y, len(paths) > 1))
            end = max(end, max(xs))
            plotted = True
        if concat and end > offset:
            ax.axvline(end, color="grey", linestyle=":", linewidth=0.8)
            ax.annotate(path.stem.removesuffix("_epochs"), (end, 0.02), xycoords=("data", "axes fraction"),
                        ha="right", va="bottom", fontsize="x-small", rotation=90)
            offset = end
    return _save(fig, ax, png_path, plotted)


def png_scatter(csv_path: Path | str, x: str, ys: Sequence[str], png_path: Path | str, title: str, *,
                label_col: str | None = None, ylabel: str = "", logx: bool = False) -> Path:
    """``ys`` against ``x``, points joined in row order (rounds), each annotated with ``label_col``."""
    path = Path(csv_path)
    rows = read_csv(path) if path.exists() else []
    fig, ax = _figure(title, x, ylabel or ", ".join(ys))
    plotted = False
    for y in ys:
        xs, vals, kept = _points(rows, x, y)
        if not xs:
            continue
        ax.plot(xs, vals, marker="o", linestyle="-", linewidth=0.8, label=y)
        if label_col:
            for px, py, r in zip(xs, vals, kept):
                text = r.get(label_col)
                if text is not None:
                    text = f"{text:g}" if isinstance(text, float) else str(text)
                    ax.annotate(text, (px, py), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
        plotted = True
    if logx and plotted:
        ax.set_xscale("log")
    return _save(fig, ax, png_path, plotted)


# ----------------------------------------------------------------------------------------------- the pipeline's three
# The same data and axes as dvc.yaml's plots (templates in .dvc/plots/), which need a CDN to render.
def plot_epochs(csv_path: Path | str, png_path: Path | str) -> Path:
    """The summary's ``epochs.csv`` (``step``, ``stage``, train/val accuracy and loss per epoch, every stage one
    after another): accuracy above, loss below, a dotted line and the stage's name where each stage starts."""
    from matplotlib.figure import Figure

    path = Path(csv_path)
    rows = read_csv(path) if path.exists() else []
    fig = Figure(figsize=(8, 6), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    starts = {}  # stage -> its first step, in run order
    for r in rows:
        if isinstance(r.get("step"), float):
            starts.setdefault(r.get("stage"), r["step"])
    for ax, what in zip(axes, ("acc", "loss")):
        ax.set_ylabel("accuracy" if what == "acc" else "loss (cross-entropy)")
        ax.grid(True, alpha=0.3)
        plotted = False
        for split in ("train", "val"):
            xs, ys, _ = _points(rows, "step", f"{split}_{what}")
            if xs:
                ax.plot(xs, ys, marker="o", markersize=2.5, label=f"{split}_{what}")
                plotted = True
        for stage, start in starts.items():
            ax.axvline(start - 0.5, color="grey", linestyle=":", linewidth=0.8)
            if what == "acc":
                ax.annotate(str(stage), (start - 0.5, 0.02), xycoords=("data", "axes fraction"), ha="left",
                            va="bottom", fontsize="x-small", color="grey", rotation=90, xytext=(2, 0),
                            textcoords="offset points")
        if plotted:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_title("Per-epoch accuracy and loss, stage after stage")
    axes[1].set_xlabel("epoch, stage after stage")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return _atomic_write(png_path, buf.getvalue())


def plot_rounds(csv_path: Path | str, png_path: Path | str) -> Path:
    """Test accuracy against parameter count, dense -> each round -> finetuned (``rounds.csv``), each point
    labelled with its round; the y-axis fits the data (matplotlib's autoscale; no forced 0..1)."""
    return png_scatter(csv_path, "params", ["test_acc"], png_path, "Test accuracy vs parameters, round by round",
                       label_col="round", ylabel="test accuracy")


def plot_widths(csv_path: Path | str, png_path: Path | str) -> Path:
    """Kept units per layer (solid bars) against the dense model's (pale bars behind them), SSM channels and MLP
    neurons side by side (``widths.csv``: ``layer``, ``<kind>_width``, ``<kind>_dense``)."""
    path = Path(csv_path)
    rows = read_csv(path) if path.exists() else []
    kinds = [c.removesuffix("_width") for c in (rows[0] if rows else {}) if c.endswith("_width")]
    fig, ax = _figure("Kept widths per layer (pale: dense)", "layer (block)", "width (units)")
    width = 0.8 / max(1, len(kinds))
    layers = [r for r in rows if isinstance(r.get("layer"), float)]
    for i, kind in enumerate(kinds):
        xs = [r["layer"] - 0.4 + width * (i + 0.5) for r in layers]
        dense = [r.get(f"{kind}_dense") for r in layers]
        if all(isinstance(d, float) for d in dense):
            ax.bar(xs, dense, width, color=f"C{i}", alpha=0.25)
        ax.bar(xs, [r.get(f"{kind}_width") or 0.0 for r in layers], width, color=f"C{i}", label=f"{kind} kept")
    ax.set_xticks([r["layer"] for r in layers])
    ax.set_ylim(0, None)
    ax.margins(y=0.2)  # room above the tallest bar for the legend
    return _save(fig, ax, png_path, bool(kinds and layers))
