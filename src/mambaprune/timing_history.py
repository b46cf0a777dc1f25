"""The dense model's throughput history on this machine: a timing far off it was disturbed and is not published.

The speedup the evaluate stage reports divides two timings taken in the same process; if something else was
using the cores meanwhile (two DVC queue workers on one CPU timed a 2,911 img/s model at 385 img/s), the
ratio is wrong whatever the interleaving. The dense model is timed again by every experiment of a sweep, so
its own earlier timings (``paths.TIMINGS_FILE`` under the repo root, one JSON line each) say what to expect.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

BASELINE_TOLERANCE = 2.0  # a dense timing off its recent median by more than this factor is not trusted
BASELINE_WINDOW = 5  # the recent timings that median is taken over


def baseline_flag(rate: float, history: list[float], tolerance: float = BASELINE_TOLERANCE) -> str | None:
    """Why the dense model's timing ``rate`` (images/s) is not to be trusted, or None.

    ``history``: earlier timings of the same dense model on this machine, same batch and thread count (oldest
    first). A rate off the median of the last ``BASELINE_WINDOW`` by more than ``tolerance``x means something
    else was using the machine (e.g. a second queue worker, which made a 2,911 img/s model time at 385):
    the speedup computed from it would be wrong. No history: nothing to compare with, None.
    """
    if not history:
        return None
    recent = history[-BASELINE_WINDOW:]
    ref = statistics.median(recent)
    if ref / tolerance <= rate <= ref * tolerance:
        return None
    return (f"the dense model timed at {rate:,.0f} img/s, {rate / ref:.2f}x the median of its last {len(recent)} "
            f"timing(s) on this machine ({ref:,.0f} img/s): the machine was busy with something else (another "
            f"queue worker?), so the speedup is withheld; time it again with `dvc repro -f evaluate`")


def timing_key(model, batch: int, device: torch.device, cuda_graph: bool) -> str:
    """What makes two timings of a model comparable: the machine's device, threads, batch and the model's size."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    params = sum(p.numel() for p in model.parameters())
    return f"{where}|batch {batch}|graph {cuda_graph and device.type == 'cuda'}|params {params}"


def read_timings(path, key: str) -> list[float]:
    """The rates recorded under ``key`` in a JSON-lines history file, oldest first ([] without the file)."""
    path = Path(path)
    if not path.is_file():
        return []
    rates = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash: skip it
        if isinstance(record, dict) and record.get("key") == key and isinstance(record.get("img_per_s"), float):
            rates.append(record["img_per_s"])
    return rates


def record_timing(path, key: str, rate: float) -> None:
    """Append one timing (one line, one write: concurrent queue workers do not interleave their lines). A last
    line cut by a crash gets its newline first, so it costs only itself."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"key": key, "img_per_s": float(rate), "time": time.time()}) + "\n"
    with open(path, "ab+") as f:
        if f.seek(0, 2) and (f.seek(-1, 2), f.read(1))[1] != b"\n":
            line = "\n" + line
        f.write(line.encode())
