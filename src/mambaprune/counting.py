"""Model size and cost: parameters, analytic forward FLOPs, per-block kept widths.

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

__all__ = ["count_params", "count_flops", "flops_breakdown", "size_summary", "layer_table"]


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


def size_summary(model) -> dict:
    """What every stage reports about a model's size: params, forward FLOPs per image, per-block widths."""
    return {"params": count_params(model), "flops": count_flops(model),
            "ssm_widths": list(model.config["ssm_widths"]), "mlp_widths": list(model.config["mlp_widths"])}


def layer_table(model, reference_config: Mapping | None = None) -> list[dict]:
    """Per block: SSM, MLP and state kept/total widths (total from ``reference_config``, default the model's own)
    and the block's parameter count."""
    c = _config(model)
    ref = reference_config if reference_config is not None else c
    if ref["depth"] != c["depth"]:
        raise ValueError(f"reference_config has depth {ref['depth']}, the model {c['depth']}")
    block_params = [0] * c["depth"]
    if isinstance(model, nn.Module):
        for name, prm in model.named_parameters():
            if name.startswith("blocks."):
                block_params[int(name.split(".")[1])] += prm.numel()
    rows = []
    for i in range(c["depth"]):
        s, st = c["ssm_widths"][i], ref["ssm_widths"][i]
        m, mt = c["mlp_widths"][i], ref["mlp_widths"][i]
        n, nt = _d_states(c)[i], _d_states(ref)[i]
        rows.append({"block": i, "ssm_kept": s, "ssm_total": st, "ssm_frac": s / st,
                     "mlp_kept": m, "mlp_total": mt, "mlp_frac": m / mt,
                     "state_kept": n, "state_total": nt, "state_frac": n / nt, "params": block_params[i]})
    return rows
