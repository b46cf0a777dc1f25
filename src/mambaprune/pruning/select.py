"""Which units to keep, given their scores: pure functions of numbers (no model in sight).

``ratio`` is the fraction of the *base* (original, pre-pruning) width removed in total, so iterative
rounds aim at cumulative targets: round 1 at 0.3 then round 2 at 0.5 ends at half the original width,
not 0.7·0.5. Scopes:

- ``global``: one threshold across every layer of a kind; keeps the top (1 - ratio)·Σ base widths units.
  Layers whose units score low lose more, and a layer can be emptied, which ``min_keep`` prevents.
- ``layerwise``: every layer keeps round((1 - ratio)·base width) of its own best units.

Then, per layer, ``round_width`` applies ``min_keep`` and ``round_to`` (hardware-friendly widths); within a
layer the highest scores are always the ones kept. Ties go to the lower index (stable sort).
"""

from __future__ import annotations

import math

import torch

__all__ = ["SCOPES", "floor_width", "round_width", "select_units", "floor_warnings"]

SCOPES = ("global", "layerwise")


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5 + 1e-9)  # epsilon: a float product meant to be k + 0.5 still rounds up


def _check_int(name: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


def floor_width(width: int, min_keep: int, round_to: int) -> int:
    """The fewest units a layer of ``width`` keeps: min_keep rounded up to a multiple of round_to, at most width."""
    return min(math.ceil(min_keep / round_to) * round_to, width)


def round_width(n_keep: float, width: int, min_keep: int, round_to: int) -> int:
    """The kept width of one layer: ``n_keep`` adjusted to ``min_keep`` and ``round_to``.

    Never above ``width``; at least min(min_keep rounded up to a multiple of round_to, width); otherwise
    the nearest non-zero multiple of ``round_to`` (the largest one that fits when the nearest is too big;
    the full width when no multiple fits). ``n_keep >= width`` keeps the full width. ``n_keep`` may be a float
    (a fractional target such as width × kept fraction).
    """
    _check_int("width", width, 1)
    _check_int("min_keep", min_keep, 1)
    _check_int("round_to", round_to, 1)
    if n_keep >= width:
        return width
    floor_keep = floor_width(width, min_keep, round_to)
    n = _round_half_up(max(n_keep, 0) / round_to) * round_to or round_to
    if n > width:
        n = (width // round_to) * round_to or width
    return max(n, floor_keep)


def _top(scores: torch.Tensor, n: int) -> list[int]:
    order = torch.sort(scores, descending=True, stable=True).indices
    return sorted(order[:n].tolist())


def select_units(scores: list[torch.Tensor], ratio: float, scope: str, min_keep: int, round_to: int,
                 base_widths: list[int] | None = None) -> tuple[list[list[int]], dict]:
    """Keep the best units of each layer → (sorted kept indices per layer, info).

    ``info``: ``scope``, ``ratio`` (asked), ``threshold`` (global: lowest score inside the global top-k
    before per-layer rounding; None for layerwise), ``layers`` (per layer: kept, total = current width,
    base, target before rounding), ``kept``/``total``/``base_total``, ``effective_ratio`` = 1 - kept/base
    total, and ``warnings`` (min_keep raised some layers, so the effective ratio is below the asked one).
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(map(repr, SCOPES))}, got {scope!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be a number in [0, 1), got {ratio!r}")
    _check_int("min_keep", min_keep, 1)
    _check_int("round_to", round_to, 1)
    scores = [torch.as_tensor(s).detach().flatten().double().cpu() for s in scores]
    widths = [int(s.numel()) for s in scores]
    if any(w == 0 for w in widths):
        raise ValueError(f"every layer needs at least one unit, got widths {widths}")
    base = list(widths) if base_widths is None else [int(b) for b in base_widths]
    if len(base) != len(widths) or any(b < w for b, w in zip(base, widths)):
        raise ValueError(f"base_widths {base} must give one original width per layer, each >= the current "
                         f"width {widths}")

    threshold = None
    if scope == "layerwise":
        targets = [min(_round_half_up((1.0 - ratio) * b), w) for b, w in zip(base, widths)]
    else:
        k = min(_round_half_up((1.0 - ratio) * sum(base)), sum(widths))
        flat = torch.cat(scores)
        layer_of = torch.repeat_interleave(torch.arange(len(widths)), torch.tensor(widths))
        top = torch.sort(flat, descending=True, stable=True).indices[:k]
        targets = torch.bincount(layer_of[top], minlength=len(widths)).tolist()
        threshold = float(flat[top[-1]]) if k > 0 else math.inf

    keep, layers, raised = [], [], []
    for i, (s, t, w, b) in enumerate(zip(scores, targets, widths, base)):
        n = round_width(t, w, min_keep, round_to)
        if t < floor_width(w, min_keep, round_to):  # min_keep binds (t may be 0: emptied)
            raised.append((i, t, n))
        keep.append(_top(s, n))
        layers.append({"kept": n, "total": w, "base": b, "target": int(t)})

    kept, base_total = sum(len(k) for k in keep), sum(base)
    effective = 1.0 - kept / base_total
    detail = [f"layer {i}: {t}->{n}" for i, t, n in raised]
    warnings = [_floor_warning(min_keep, round_to, detail, effective, ratio)] if raised else []
    info = {"scope": scope, "ratio": float(ratio), "threshold": threshold, "layers": layers, "kept": kept,
            "total": sum(widths), "base_total": base_total, "effective_ratio": effective, "warnings": warnings}
    return keep, info


def floor_warnings(ratio: float, base_widths: list[int], kept: list[int], min_keep: int, round_to: int) -> list[str]:
    """``select_units``' warning for a selection that reports only its kept widths (Refill): a layer whose asked
    share (1 − ratio)·base is below the floor and that kept exactly the floor was raised by min_keep/round_to."""
    raised = []
    for i, (base, n) in enumerate(zip(base_widths, kept, strict=True)):
        floor = floor_width(base, min_keep, round_to)
        if base * (1 - ratio) < floor and n == floor:
            raised.append(f"layer {i}: {base * (1 - ratio):.1f}->{n}")
    if not raised:
        return []
    return [_floor_warning(min_keep, round_to, raised, 1.0 - sum(kept) / sum(base_widths), ratio)]


def _floor_warning(min_keep: int, round_to: int, raised: list[str], effective: float, ratio: float) -> str:
    return (f"min_keep={min_keep} (round_to={round_to}) raised {len(raised)} layer(s) above their target "
            f"({', '.join(raised)}); effective ratio {effective:.4f} instead of the asked {ratio:.4f}")
