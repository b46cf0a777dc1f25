"""Model size and cost: parameters, analytic forward FLOPs, per-block kept widths, and ``size_report``, the one
vocabulary every stage, MLflow and the API report a model's size in.

FLOP convention (per image, forward only): FLOPs = 2 · multiply-accumulates of every conv and Linear
(patch embedding, in_proj, x_proj, out_proj, fc1, fc2 per token; the head once, after token pooling;
bias adds not counted), plus the depthwise causal conv1d (2·d_conv·d_inner per token and direction),
plus the selective scan per token and direction: 6·d_inner·d_state (exp(ΔA), the state update's two
multiply-adds, the C read-out's multiply-add) + 3·d_inner (D skip and the SiLU gate). LayerNorm, GELU,
SiLU, softplus, the residual adds and the token mean are ignored (together well under 1 %).
Every width is the block's own: d_inner (``ssm_widths``), MLP hidden (``mlp_widths``), state size (``d_states``;
a config without it has ``d_state`` in every block) and the embedding width (``embed_dim``, in the patch
embedding, in_proj, out_proj, fc1, fc2 and the head).
Everything is computed from ``model.config`` alone, so it matches any physically pruned model exactly and
costs nothing to evaluate. mamba_small at 32×32 (64 tokens): linear layers 2.077 GFLOP, total ≈ 2.14.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn as nn

__all__ = ["count_params", "count_flops", "flops_breakdown", "size_report"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as dt_bias and the normalisation stats excluded)."""
    return sum(p.numel() for p in model.parameters())


def _config(model_or_config) -> Mapping:
    return model_or_config if isinstance(model_or_config, Mapping) else model_or_config.config


def _d_states(c: Mapping) -> list[int]:
    return list(c["d_states"]) if c.get("d_states") is not None else [c["d_state"]] * c["depth"]


def flops_breakdown(model, img_size: int | None = None) -> dict[str, int]:
    """Forward FLOPs per image by component (see the module docstring); ``model`` may be a config dict."""
    c = _config(model)
    img = int(img_size if img_size is not None else c["img_size"])
    p, dim, k = c["patch_size"], c["embed_dim"], c["d_conv"]
    tokens = (img // p) ** 2
    dirs = 2 if c.get("bidirectional") else 1
    out = {"patch_embed": 2 * tokens * c["in_chans"] * p * p * dim, "in_proj": 0, "x_proj": 0, "out_proj": 0,
           "conv1d": 0, "scan": 0, "fc1": 0, "fc2": 0, "head": 2 * dim * c["num_classes"]}
    for di, h, n in zip(c["ssm_widths"], c["mlp_widths"], _d_states(c)):
        out["in_proj"] += 2 * tokens * dim * 2 * di
        out["x_proj"] += 2 * tokens * dirs * di * (di + 2 * n)
        out["conv1d"] += 2 * tokens * dirs * k * di
        out["scan"] += tokens * dirs * (6 * di * n + 3 * di)
        out["out_proj"] += 2 * tokens * di * dim
        out["fc1"] += 2 * tokens * dim * h
        out["fc2"] += 2 * tokens * h * dim
    return out


def count_flops(model, img_size: int | None = None) -> int:
    """Forward FLOPs per image (2·MACs convention, scan included; see the module docstring)."""
    return sum(flops_breakdown(model, img_size).values())


def size_report(model: nn.Module, dense: nn.Module | None = None) -> dict:
    """A model's size in the project's one vocabulary, used by every stage's metrics, MLflow and the API.

    ``params``, ``flops`` (forward FLOPs per image), ``ssm_widths``/``mlp_widths`` (per block); against ``dense``
    also ``dense_params``, ``dense_flops``, and ``param_reduction``/``flop_reduction``: the fraction removed,
    0..1 (0 = as large as dense; 0.75 = a quarter left).
    """
    out = {"params": count_params(model), "flops": count_flops(model),
           "ssm_widths": list(model.config["ssm_widths"]), "mlp_widths": list(model.config["mlp_widths"])}
    if dense is not None:
        dense_params, dense_flops = count_params(dense), count_flops(dense)
        out |= {"dense_params": dense_params, "dense_flops": dense_flops,
                "param_reduction": 1.0 - out["params"] / dense_params,
                "flop_reduction": 1.0 - out["flops"] / dense_flops}
    return out
