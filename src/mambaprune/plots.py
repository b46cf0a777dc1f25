"""PNG plots of the pipeline's CSVs (``dvc plots show`` loads its chart library from a CDN: blank offline).

matplotlib is imported lazily and without pyplot (no global figure state). The CSVs themselves are written
by ``records``; PNGs go through the same atomic writer.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .records import atomic_write, read_csv

__all__ = ["png_line_plot", "png_scatter", "plot_rounds", "plot_widths"]


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
    return atomic_write(png_path, lambda f: f.write(buf.getvalue()))


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
                  title: str, *, ylabel: str = "") -> Path:
    """Columns ``ys`` against ``x`` from one CSV or several (one line per file and column, labelled by the
    file stem)."""
    paths = [Path(csv_path)] if isinstance(csv_path, (str, Path)) else [Path(p) for p in csv_path]
    fig, ax = _figure(title, x, ylabel or ", ".join(ys))
    plotted = False
    for path in paths:
        rows = read_csv(path) if path.exists() else []
        for y in ys:
            xs, vals, _ = _points(rows, x, y)
            if xs:
                ax.plot(xs, vals, marker="o", markersize=3, label=_label(path, y, len(paths) > 1))
                plotted = True
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


# ----------------------------------------------------------------------------------------------- the summary's plots
def plot_rounds(csv_path: Path | str, png_path: Path | str) -> Path:
    """Accuracy against parameter count across pruning rounds (``plots/rounds.csv``)."""
    return png_scatter(csv_path, "params", ["val_acc", "test_acc"], png_path, "Accuracy vs parameters by round",
                       label_col="round", ylabel="accuracy")


def plot_widths(csv_path: Path | str, png_path: Path | str) -> Path:
    """Kept widths per layer (``plots/widths.csv``: every ``*_width`` column)."""
    path = Path(csv_path)
    header = []
    if path.exists():
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
    return png_line_plot(path, "layer", [c for c in header if c.endswith("_width")], png_path,
                         "Kept widths per layer", ylabel="units kept")
