"""Files written whole and at once: the one atomic writer, and the JSON/CSV records built on it.

``atomic_write`` writes to a temp file in the target's folder, flushes it to disk and renames it over the
target, so a killed process never leaves a half-written file under the final name (metrics that DVC or git
would pick up, a checkpoint a later stage would load). Every file the package writes goes through it:
metrics JSON, epoch and plot CSVs, PNGs, checkpoints, resume states.

Records (``write_json``, ``write_csv``) round floats to 6 significant digits, so reruns that differ only in
the last bits of a float do not show up as diffs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from .errors import DataError
from .paths import metrics_file

__all__ = ["SIG_DIGITS", "atomic_write", "round_floats", "write_json", "write_csv", "read_csv", "publish_metrics",
           "read_metrics"]

SIG_DIGITS = 6
_UMASK = os.umask(0o022)  # read the process umask (there is no getter) and set it back at once
os.umask(_UMASK)


def atomic_write(path: Path | str, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, then rename it over ``path`` (atomic on POSIX and
    Windows). On any error the temp file is removed and ``path`` keeps its previous content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 -> the mode any new file gets
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


def write_json(path: Path | str, data) -> Path:
    """Sorted keys, 2-space indent, trailing newline, floats rounded (``round_floats``)."""
    text = json.dumps(round_floats(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def write_csv(path: Path | str, rows: Sequence[Mapping], fieldnames: Sequence[str] | None = None) -> Path:
    """Columns: ``fieldnames`` or the union of row keys in first-seen order; missing cells empty; floats
    rounded (``round_floats``)."""
    columns = list(fieldnames) if fieldnames is not None else list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    if columns:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if (v := round_floats(row.get(k))) is None else v for k in columns})
    return atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


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


def publish_metrics(run, stage: str, metrics: Mapping) -> Path:
    """A stage's final metrics under one set of names: all of them to ``metrics/<stage>.json`` (DVC's), the
    numbers to its tracking run (``tracking.stage_run``; nested keys as ``a/b``, lists and text left out)."""
    run.log_metrics(metrics)
    return write_json(metrics_file(stage), metrics)


def read_metrics(stage: str) -> dict:
    """``metrics/<stage>.json``, as ``publish_metrics`` wrote it; DataError when the stage has not run."""
    path = metrics_file(stage)
    if not path.is_file():
        raise DataError(f"{path} not found: run the stages before this one (`dvc repro`)")
    return json.loads(path.read_text())
