"""Schedules: how much each round keeps, and how strong the RSST penalty is at a point of a round.

Kept fraction after round r of N: (1 − ratio)^(r/N) of the ORIGINAL width, so every round removes the
same share of what is left and round N ends exactly at 1 − ratio. Widths are then rounded by
``round_width`` (min_keep, round_to) — rounding is applied to the original width times the fraction,
never compounded round over round.
"""

from __future__ import annotations

import math

from .select import round_width  # the project's one rounding rule

__all__ = ["kept_fraction", "round_targets", "rsst_lambda", "RSST_SCHEDULES"]

RSST_SCHEDULES = ("exp", "poly", "linear", "constant")


def kept_fraction(ratio: float, round_index: int, num_rounds: int) -> float:
    """Fraction of the original units kept after round ``round_index`` (0 = before pruning) of ``num_rounds``."""
    if not 0 <= round_index <= num_rounds or num_rounds < 1:
        raise ValueError(f"round_index must be in [0, {num_rounds}] with num_rounds >= 1, "
                         f"got {round_index} of {num_rounds}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    if round_index == num_rounds:  # exact, no pow round-off at the end
        return 1.0 - ratio
    return (1.0 - ratio) ** (round_index / num_rounds)


def round_targets(base_widths: list[int], ratio: float, round_index: int, num_rounds: int,
                  min_keep: int, round_to: int) -> list[int]:
    """Target width per layer after round ``round_index``: original width × kept fraction, then rounded."""
    f = kept_fraction(ratio, round_index, num_rounds)
    return [int(w) if round_index == 0 else round_width(w * f, int(w), min_keep, round_to) for w in base_widths]


def rsst_lambda(progress: float, strength: float, schedule: str, exponent: float) -> float:
    """Penalty strength λ at round progress p ∈ (0, 1]; λ(1) = strength for every schedule.

    exp: g·(e^(p^k) − 1)/(e − 1); poly: g·p^k; linear: g·p; constant: g.
    """
    p = min(max(float(progress), 0.0), 1.0)
    if schedule == "exp":
        return strength * math.expm1(p ** exponent) / (math.e - 1.0)
    if schedule == "poly":
        return strength * p ** exponent
    if schedule == "linear":
        return strength * p
    if schedule == "constant":
        return float(strength)
    raise ValueError(f"rsst schedule must be one of {', '.join(RSST_SCHEDULES)}; got {schedule!r}")
