"""RSST: regularised structured sparse training (Growing Regularization, Wang et al., ICLR 2021).

At the start of a round the units to remove are chosen; the round trains at FULL width with a penalty on
those units' weight groups only, its strength λ growing with the round's progress and recomputed every
step (``rsst_lambda``); at the end the groups are cut, their norms by then near zero.

A unit's group is its entries in every member tensor (``weight_matrices``: the coupling spec without the
dt_bias buffer and without A_log, whose value is no size — see units.py); D and the biases are in it.
An entry shared by two members of the same unit (x_proj[c, c]: input column c and Δ row c) counts once
per member. Penalties: ``group_l2`` = λ·Σ_g ||w_g||², ``group_lasso`` = λ·Σ_g ||w_g||₂.

How the penalty acts (``update``):
- ``gradient``: its gradient is added by ``after_backward`` after clipping (fp32, outside autocast), vectorised
  per member tensor with ``index_select``, and goes through the optimizer. Under Adam(W) the update is
  normalised, so a weight moves about lr per step however large λ is: with a small lr and a short round, a
  group that starts large (D starts at 1) cannot reach zero.
- ``decoupled``: after every optimizer step, ``after_step`` applies the penalty's proximal map with step size
  lr (the current learning rate), like AdamW's decoupled weight decay: group_l2 scales each target group by
  1 / (1 + 2·lr·λ); group_lasso by max(0, 1 − lr·λ / ||w_g||), which sets a group to exactly zero once its
  norm is below lr·λ. λ·lr is then the shrink rate per step, whatever the optimizer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .schedule import rsst_lambda
from .units import KINDS, block_prefix, complement, weight_matrices, weight_members, width_of, widths

__all__ = ["RSST_PENALTIES", "RSST_UPDATES", "group_sq_norms", "group_norms", "scale_units", "RSSTRegularizer"]

RSST_PENALTIES = ("group_l2", "group_lasso")
RSST_UPDATES = ("gradient", "decoupled")


def _state_and_config(model_or_state, config: Mapping | None) -> tuple[Mapping[str, torch.Tensor], Mapping]:
    if isinstance(model_or_state, torch.nn.Module):
        return dict(model_or_state.named_parameters()), config or model_or_state.config
    if config is None:
        raise ValueError("group_norms on a state dict needs the model config")
    return model_or_state, config


def group_sq_norms(state: Mapping[str, torch.Tensor], config: Mapping, kind: str, i: int,
                   units: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each listed unit's group in block i (differentiable, fp32 or wider)."""
    out = None
    for mat in weight_matrices(state, config, kind, i):
        rows = mat.index_select(0, units.to(mat.device))
        sq = rows.to(torch.promote_types(rows.dtype, torch.float32)).pow(2).sum(dim=1)
        out = sq if out is None else out + sq
    return out


def group_norms(model_or_state, config: Mapping | None, kind: str,
                block_units: list[list[int]]) -> list[torch.Tensor]:
    """L2 norm of each listed unit's group, per block (detached)."""
    state, config = _state_and_config(model_or_state, config)
    with torch.no_grad():
        return [group_sq_norms(state, config, kind, i, torch.as_tensor(u, dtype=torch.long)).sqrt()
                for i, u in enumerate(block_units)]


@torch.no_grad()
def scale_units(params: Mapping[str, torch.Tensor], config: Mapping, kind: str, i: int, units: torch.Tensor,
                factor: torch.Tensor) -> None:
    """Multiply unit ``units[j]``'s entries in every member tensor by ``factor[j]``, in place, touching only
    those slices (A_log and the dt_bias buffer are not weights: left alone). x_proj[c, c] belongs to two
    members and is scaled by both."""
    w = width_of(config, kind, i)
    for m in weight_members(config, kind):
        t = params[block_prefix(i) + m.name]
        idx = m.offset * w + units.to(t.device)
        shape = [1] * t.ndim
        shape[m.dim] = -1
        t.index_copy_(m.dim, idx, t.index_select(m.dim, idx) * factor.to(t).view(shape))


class RSSTRegularizer:
    """Training-loop hook applying λ(progress)·penalty of the target groups every step: as a gradient
    (``after_backward``) or as a decoupled proximal step after the optimizer's (``after_step``), see ``update``.

    ``remove``: {kind: [units to remove in block 0, ...]} for the round. ``lambda_trace`` holds the λ of
    every call; ``on_epoch_end`` logs λ and the mean target / non-target group norms.
    """

    def __init__(self, model: torch.nn.Module, remove: Mapping[str, list[list[int]]], strength: float,
                 schedule: str = "exp", exponent: float = 4.0, penalty: str = "group_l2", update: str = "gradient"):
        if penalty not in RSST_PENALTIES:
            raise ValueError(f"rsst penalty must be one of {', '.join(RSST_PENALTIES)}; got {penalty!r}")
        if update not in RSST_UPDATES:
            raise ValueError(f"rsst update must be one of {', '.join(RSST_UPDATES)}; got {update!r}")
        self.update = update
        rsst_lambda(1.0, strength, schedule, exponent)  # validates the schedule now, not at step 1
        self.model, self.config = model, dict(model.config)
        self.strength, self.schedule, self.exponent, self.penalty = strength, schedule, exponent, penalty
        self.targets: dict[str, list[torch.Tensor]] = {}
        self.others: dict[str, list[torch.Tensor]] = {}
        for kind, blocks in remove.items():
            if kind not in KINDS:
                raise ValueError(f"unit kind must be one of {KINDS}, got {kind!r}")
            kind_widths = widths(self.config, kind)
            if len(blocks) != len(kind_widths):
                raise ValueError(f"remove[{kind!r}] needs {len(kind_widths)} blocks, got {len(blocks)}")
            self.targets[kind] = [torch.as_tensor(sorted(set(b)), dtype=torch.long) for b in blocks]
            self.others[kind] = [torch.as_tensor(complement(b, w), dtype=torch.long)
                                 for w, b in zip(kind_widths, blocks)]
        self.lambda_trace: list[float] = []
        self._device = torch.device("cpu")

    def _params(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        params = dict(model.named_parameters())
        device = next(iter(params.values())).device
        if self._device != device:  # index tensors live where the weights are: no per-step host copies
            self.targets = {k: [u.to(device) for u in v] for k, v in self.targets.items()}
            self._device = device
        return params

    def _step_lambda(self, progress: float) -> float:
        """λ(progress), recorded in ``lambda_trace`` (one entry per training step, whichever update)."""
        lam = rsst_lambda(progress, self.strength, self.schedule, self.exponent)
        self.lambda_trace.append(lam)
        return lam

    def penalty_value(self, model: torch.nn.Module) -> torch.Tensor | None:
        """Σ over target groups of ||w_g||² (group_l2) or ||w_g||₂ (group_lasso), without λ."""
        params = self._params(model)
        total = None
        for kind, blocks in self.targets.items():
            for i, units in enumerate(blocks):
                if units.numel() == 0:
                    continue
                sq = group_sq_norms(params, self.config, kind, i, units)
                # clamp: the gradient of ||w|| at exactly 0 is taken as 0, not NaN
                term = sq.sum() if self.penalty == "group_l2" else sq.clamp_min(1e-30).sqrt().sum()
                total = term if total is None else total + term
        return total

    def penalty_term(self, model: torch.nn.Module, progress: float) -> torch.Tensor | None:
        """λ(progress)·penalty, differentiable; records λ in ``lambda_trace`` (one entry per step)."""
        lam = self._step_lambda(progress)
        value = self.penalty_value(model)
        return None if value is None else lam * value

    def after_backward(self, model: torch.nn.Module, progress: float) -> None:
        """``gradient`` update: add the penalty's gradient to ``.grad`` after the data gradient was clipped, so
        a strong λ is never scaled down by clipping and never scales the data gradient down either."""
        if self.update != "gradient":
            return
        with torch.enable_grad():
            value = self.penalty_term(model, progress)
        if value is None:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(value, params, allow_unused=True)
        for p, g in zip(params, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad.add_(g)

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module, progress: float, lr: float) -> None:
        """``decoupled`` update: the penalty's proximal map at step size ``lr`` on every target group."""
        if self.update != "decoupled":
            return
        lam = self._step_lambda(progress)
        params = self._params(model)
        for kind, blocks in self.targets.items():
            for i, units in enumerate(blocks):
                if units.numel() == 0:
                    continue
                if self.penalty == "group_l2":
                    factor = torch.full(units.shape, 1.0 / (1.0 + 2.0 * lr * lam), dtype=torch.float64,
                                        device=units.device)  # no per-step host copies on CUDA
                else:
                    norms = group_sq_norms(params, self.config, kind, i, units).sqrt()
                    factor = (1.0 - lr * lam / norms.clamp_min(1e-30)).clamp_min(0.0)
                scale_units(params, self.config, kind, i, units, factor)

    def norms(self) -> dict[str, float]:
        """Mean group norm of the target units and of all other units (over the targeted kinds)."""
        out = {}
        for name, sel in (("target", self.targets), ("other", self.others)):
            norms = [n for kind, blocks in sel.items()
                     for n in group_norms(self.model, self.config, kind, [b.tolist() for b in blocks])]
            flat = torch.cat(norms) if norms else torch.zeros(0)
            out[name] = flat.mean().item() if flat.numel() else float("nan")
        return out

    def on_epoch_end(self, epoch: int, record: dict) -> None:
        n = self.norms()
        record["rsst_lambda"] = self.lambda_trace[-1] if self.lambda_trace else 0.0
        record["rsst_target_norm"] = n["target"]
        record["rsst_other_norm"] = n["other"]
