"""PNG plots of the pipeline's CSVs (``dvc plots show`` loads its chart library from a CDN: blank offline).

matplotlib is imported lazily and without pyplot (no global figure state). The CSVs themselves are written
by ``records``; PNGs go through the same atomic writer.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .records import atomic_write, read_csv

__all__ = ["png_line_plot", "png_scatter", "plot_epochs", "plot_rounds", "plot_widths"]


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
    return atomic_write(png_path, lambda f: f.write(buf.getvalue()))


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
