"""Schedules: how much each round keeps, and how strong the RSST penalty is at each step of a round.

Kept fraction after round r of N: (1 − ratio)^(r/N) of the ORIGINAL width, so every round removes the
same share of what is left and round N ends exactly at 1 − ratio. Widths are then rounded by
``round_width`` (min_keep, round_to) — rounding is applied to the original width times the fraction,
never compounded round over round.
"""

from __future__ import annotations

import math

from .select import round_width  # the project's one rounding rule

__all__ = ["kept_fraction", "round_targets", "rsst_shape", "rsst_lambda", "rsst_shrink_factors", "RSST_SCHEDULES"]

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


def rsst_shape(progress: float, schedule: str, exponent: float) -> float:
    """The schedule's shape s(p) at round progress p ∈ [0, 1], with s(1) = 1 for every schedule.

    exp: (e^(p^k) − 1)/(e − 1); poly: p^k; linear: p; constant: 1.
    """
    p = min(max(float(progress), 0.0), 1.0)
    if schedule == "exp":
        return math.expm1(p ** exponent) / (math.e - 1.0)
    if schedule == "poly":
        return p ** exponent
    if schedule == "linear":
        return p
    if schedule == "constant":
        return 1.0
    raise ValueError(f"rsst schedule must be one of {', '.join(RSST_SCHEDULES)}; got {schedule!r}")


def rsst_lambda(progress: float, strength: float, schedule: str, exponent: float) -> float:
    """Penalty strength λ(p) = strength · s(p) (``rsst_shape``); λ(1) = strength for every schedule."""
    return strength * rsst_shape(progress, schedule, exponent)


def rsst_shrink_factors(total_steps: int, strength: float, schedule: str, exponent: float) -> list[float]:
    """Per step t = 1..N of a round, the factor f_t that RSST's decoupled update multiplies the target
    weights by: f_t = F^(−s(t/N) / Σ_u s(u/N)) with F = ``strength``, s = ``rsst_shape``.

    ∏_t f_t = 1/F (to float rounding): over the round the penalty alone shrinks the targets F-fold, for any
    N, learning rate or optimizer; the schedule only decides when (exp, k = 4: about 3/4 of the shrink, in
    log terms, falls in the last fifth of the round).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not strength >= 1.0:
        raise ValueError(f"the shrink factor F must be >= 1 (1 = no shrink), got {strength}")
    shape = [rsst_shape(t / total_steps, schedule, exponent) for t in range(1, total_steps + 1)]
    total = math.fsum(shape)
    if total == 0.0:  # e.g. poly with a huge k over a few steps: all of the shrink in the last step
        shape, total = [0.0] * (total_steps - 1) + [1.0], 1.0
    log_f = math.log(strength)
    return [math.exp(-log_f * s / total) for s in shape]
