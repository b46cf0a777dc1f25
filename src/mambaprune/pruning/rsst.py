"""RSST: regularised structured sparse training (after Growing Regularization, GReg: Wang et al., "Neural
Pruning via Growing Regularization", ICLR 2021).

At the start of a round the units to remove are chosen; the round trains at FULL width while the weights of
those units are pushed towards zero, harder as the round goes on; at the end they are cut, by then near zero,
so the cut itself costs (almost) nothing.

What is pushed: T, the entries of every member tensor of a target unit (``weight_members``: the coupling
spec without the dt_bias buffer and without A_log, whose value is no size, see units.py); D and the biases
are in it. Every entry counts once, also x_proj[c, c] (input column AND Δ row of unit c) and x_proj[j, k]
of two target units. For a state dimension T holds its B and C rows of x_proj (every direction); for a residual
channel (``embed``) every entry of its group over the model, LayerNorm weights and biases included: the channel
then carries ~0 through the whole residual stream, but the LayerNorms still average over it until the cut, so
an embed cut changes their statistics and is not free (``cost.py``).

How (``update``, ``prune.rsst_update``):

- ``decoupled`` (the default): after every optimizer step, every entry of T is multiplied by

      f_t = F^(−s(t/N) / Σ_{u=1..N} s(u/N)),    t = 1..N, the round's steps,

  with F = ``strength`` and s the schedule's shape (``schedule.rsst_shape``: exp (e^(p^k) − 1)/(e − 1),
  poly p^k, linear p, constant 1). So ∏_t f_t = 1/F: **the penalty alone shrinks the target groups F-fold
  by the cut**, whatever the lr, the optimizer or N (``schedule.rsst_shrink_factors``). f_t is the exact
  proximal map of the group-L2 penalty c_t·||w_T||² at step 1, w ← w / (1 + 2c_t) with 1 + 2c_t = 1/f_t:
  GReg's growing L2 penalty, its per-step strength set by the schedule rather than by lr × λ. Not by lr:
  under a cosine schedule the lr at the end of a round is ~1 % of its peak, so a step of lr·λ fades exactly
  when the schedule wants it strongest. What the data gradient adds back: under Adam(W) about lr per entry
  per step, so a group of k entries cannot stay much above √k·lr_t·f_t/(1 − f_t) once the shrink is strong;
  at the end of a round f_t is smallest (exp, k = 4: f_N = F^(−6.3/N)).
- ``gradient``: the reference's form. λ(p)·penalty, λ(p) = ``strength``·s(p), its gradient added to
  ``.grad`` after clipping (``after_backward``), so it goes through the optimizer: under Adam(W) a weight
  then moves about lr per step however large λ is, and a short round at a small lr cannot bring a group
  that starts large (D starts at 1) near zero. Penalties: ``group_l2`` = λ·||w_T||², ``group_lasso`` =
  λ·Σ_g ||w_g|| (units g; x_proj[j, k] of two target units is in both groups).

Growing regularization elsewhere, for comparison: GReg (github.com/MingSun-Tse/Regularization-Pruning,
``pruner/reg_pruner.py``) adds reg·w to the gradient of the pruned groups under SGD at a constant lr (1e-3),
raises reg by 1e-4 every 5 iterations up to 1, and prunes once the kept/pruned magnitude ratio passes 1000;
Torch-Pruning's ``GrowingRegPruner`` adds reg·w to ``.grad`` of every group, reg growing by delta_reg ×
standardised (1 − importance) at each ``update_reg()``. Both act through the optimizer's lr, as
``gradient`` does; ``decoupled`` fixes the total shrink instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .schedule import rsst_lambda, rsst_shrink_factors
from .units import (
    KINDS,
    complement,
    double_counted,
    layer_prefix,
    member_start,
    weight_matrices,
    weight_members,
    width_of,
    widths,
)

__all__ = ["RSST_PENALTIES", "RSST_UPDATES", "group_sq_norms", "group_norms", "target_masks", "RSSTRegularizer"]

RSST_PENALTIES = ("group_l2", "group_lasso")
RSST_UPDATES = ("decoupled", "gradient")


def _state_and_config(model_or_state, config: Mapping | None) -> tuple[Mapping[str, torch.Tensor], Mapping]:
    if isinstance(model_or_state, torch.nn.Module):
        return dict(model_or_state.named_parameters()), config or model_or_state.config
    if config is None:
        raise ValueError("group_norms on a state dict needs the model config")
    return model_or_state, config


def _wide(t: torch.Tensor) -> torch.Tensor:
    """fp32 or wider: penalties and norms are summed outside autocast's bf16."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def group_sq_norms(state: Mapping[str, torch.Tensor], config: Mapping, kind: str, i: int,
                   units: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each listed unit's group in block i, every entry once (differentiable, fp32 or
    wider): the sum over the member slices, less x_proj[c, c] once (``units.double_counted``)."""
    out = None
    for mat in weight_matrices(state, config, kind, i):
        sq = _wide(mat.index_select(0, units.to(mat.device))).pow(2).sum(dim=1)
        out = sq if out is None else out + sq
    for twice in double_counted(state, config, kind, i):
        out = out - _wide(twice.index_select(0, units.to(twice.device))).pow(2)
    return out


def group_norms(model_or_state, config: Mapping | None, kind: str,
                block_units: list[list[int]]) -> list[torch.Tensor]:
    """L2 norm of each listed unit's group, per block (detached)."""
    state, config = _state_and_config(model_or_state, config)
    with torch.no_grad():
        return [group_sq_norms(state, config, kind, i, torch.as_tensor(u, dtype=torch.long)).clamp_min(0).sqrt()
                for i, u in enumerate(block_units)]


@torch.no_grad()
def target_masks(params: Mapping[str, torch.Tensor], config: Mapping,
                 targets: Mapping[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{tensor name: 0/1 mask of its entries in T, in the tensor's dtype}, T = the union of the target units'
    groups (each entry once, however many target groups hold it); tensors without a target entry are left out."""
    masks: dict[str, torch.Tensor] = {}
    for kind, blocks in targets.items():
        for i, units in enumerate(blocks):
            if units.numel() == 0:
                continue
            w = width_of(config, kind, i)
            for m in weight_members(config, kind):
                name = layer_prefix(kind, i) + m.name  # embed's names are absolute
                t = params[name]
                mask = masks.setdefault(name, torch.zeros_like(t, memory_format=torch.contiguous_format))
                # member_start: a state's B and C rows start after the block's Δ rows (d_inner of them)
                mask.index_fill_(m.dim, member_start(m, config, i, w) + units.to(t.device), 1.0)
    return masks


class RSSTRegularizer:
    """Training-loop hook that drives the target units' weights towards zero over one ``fit`` (see the module
    docstring): ``on_fit_start`` learns the number of steps N, then every step either ``after_step``
    (``decoupled``: multiply T by f_t) or ``after_backward`` (``gradient``: add λ(p)·penalty's gradient) acts.

    ``remove``: {kind: [units to remove in block 0, ...]} for the round. ``lambda_trace`` holds one λ per
    step: the penalty's coefficient as applied (``gradient``), or the proximal one c_t, 1 + 2c_t = 1/f_t, of
    every step of the round (``decoupled``); ``on_epoch_end`` logs the mean target / non-target group norms.

    The decoupled update is ``graph_safe`` (see step.py): in a replayed CUDA graph ``progress`` is a 0-d device
    tensor and f_t is looked up on the device, so the whole step stays one graph.
    """

    def __init__(self, model: torch.nn.Module, remove: Mapping[str, list[list[int]]], strength: float,
                 schedule: str = "exp", exponent: float = 4.0, penalty: str = "group_l2", update: str = "decoupled"):
        if penalty not in RSST_PENALTIES:
            raise ValueError(f"rsst penalty must be one of {', '.join(RSST_PENALTIES)}; got {penalty!r}")
        if update not in RSST_UPDATES:
            raise ValueError(f"rsst update must be one of {', '.join(RSST_UPDATES)}; got {update!r}")
        if update == "decoupled" and penalty != "group_l2":
            raise ValueError("the decoupled rsst update is the group_l2 penalty's proximal step; group_lasso "
                             "works only with update 'gradient'")
        if update == "decoupled":
            rsst_shrink_factors(1, strength, schedule, exponent)  # validates F and the schedule now
        else:
            rsst_lambda(1.0, strength, schedule, exponent)  # validates the schedule now, not at step 1
        self.update = update
        self.graph_safe = update == "decoupled"
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
        self._trace: list[float] = []  # λ of each gradient step
        self.factors: list[float] | None = None  # f_t of each step (decoupled), set by on_fit_start
        self._factor_table: torch.Tensor | None = None  # the same on the weights' device, for graph replays
        self._masks: dict[str, torch.Tensor] | None = None
        self._device = torch.device("cpu")

    def _params(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        params = dict(model.named_parameters())
        device = next(iter(params.values())).device
        if self._device != device:  # index tensors and masks live where the weights are: no per-step copies
            self.targets = {k: [u.to(device) for u in v] for k, v in self.targets.items()}
            self._masks = self._factor_table = None
            self._device = device
        if self._masks is None:
            self._masks = target_masks(params, self.config, self.targets)
        return params

    def on_fit_start(self, total_steps: int) -> None:
        """``fit`` says how many optimizer steps N the round takes (the same after a resume)."""
        if self.update == "decoupled":
            self.factors = rsst_shrink_factors(total_steps, self.strength, self.schedule, self.exponent)
            self._factor_table = None

    @property
    def lambda_trace(self) -> list[float]:
        if self.update == "decoupled":
            return [(1.0 / f - 1.0) / 2.0 for f in self.factors or ()]
        return self._trace

    def step_factor(self, progress):
        """f_t of the step at ``progress`` = t/N (``decoupled``): a float, or a 0-d device tensor when
        ``progress`` is one (a replayed CUDA graph: no host read)."""
        if self.factors is None:
            raise RuntimeError("RSSTRegularizer: call on_fit_start(total_steps) before the first step")
        n = len(self.factors)
        if isinstance(progress, torch.Tensor):
            if self._factor_table is None or self._factor_table.device != progress.device:
                self._factor_table = torch.tensor(self.factors, dtype=torch.float32, device=progress.device)
            t = (progress * n).round().long().clamp(1, n) - 1
            return self._factor_table.index_select(0, t.reshape(1)).reshape(())  # a kernel, no host read
        return self.factors[min(max(round(progress * n), 1), n) - 1]

    def penalty_value(self, model: torch.nn.Module) -> torch.Tensor | None:
        """||w_T||² (group_l2) or Σ_g ||w_g||₂ (group_lasso), without λ; None without targets."""
        params = self._params(model)
        if not self._masks:
            return None
        if self.penalty == "group_l2":
            return sum(_wide(params[n] * m).pow(2).sum() for n, m in self._masks.items())
        total = None
        for kind, blocks in self.targets.items():
            for i, units in enumerate(blocks):
                if units.numel():
                    # clamp: the gradient of ||w|| at exactly 0 is taken as 0, not NaN
                    term = group_sq_norms(params, self.config, kind, i, units).clamp_min(1e-30).sqrt().sum()
                    total = term if total is None else total + term
        return total

    def penalty_term(self, model: torch.nn.Module, progress: float) -> torch.Tensor | None:
        """λ(progress)·penalty, differentiable; records λ in ``lambda_trace`` (one entry per step)."""
        lam = rsst_lambda(progress, self.strength, self.schedule, self.exponent)
        self._trace.append(lam)
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
        """``decoupled`` update: multiply every entry of T by this step's f_t (lr is not used)."""
        if self.update != "decoupled":
            return
        f = self.step_factor(progress)
        params = self._params(model)
        if not self._masks:  # nothing to remove this round
            return
        # p ← p · (1 + (f − 1)·mask): three multi-tensor kernels for all tensors (not three per tensor); entries
        # outside T are multiplied by exactly 1
        scales = torch._foreach_mul(list(self._masks.values()), f - 1.0)
        torch._foreach_add_(scales, 1.0)
        torch._foreach_mul_([params[name] for name in self._masks], scales)

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
        if self.update == "gradient":
            record["rsst_lambda"] = self._trace[-1] if self._trace else 0.0
        record["rsst_target_norm"] = n["target"]
        record["rsst_other_norm"] = n["other"]
        record["rsst_target_other_ratio"] = n["target"] / n["other"] if n["other"] else float("nan")
