"""The reference that physical pruning is checked against: the dense model with removed units zeroed."""

from __future__ import annotations

import torch


def masked_forward(model, plan, x):
    """Dense forward with the removed units' activations forced to zero (SSM: every direction's conv1d output
    channel; MLP: the GELU output neuron; state: every direction's B output of x_proj, which keeps the state at
    zero). Embed pruning is no masking of the dense model (its LayerNorms then see fewer channels): refused."""
    if plan.get("embed") is not None:
        raise ValueError("an embed plan is not a masking of the dense model; compare with a hand-built model")
    hooks = []

    def zero(idx, dim):
        return lambda module, inputs, out: out.index_fill(dim, idx, 0.0)

    try:
        for kind, entries in plan.items():
            if kind == "embed":
                continue
            for i, keep in enumerate(entries or []):
                if keep is None:
                    continue
                blk = model.blocks[i]
                width = {"ssm": blk.mixer.d_inner, "mlp": blk.mlp.fc1.out_features,
                         "state": blk.mixer.ssm[0].d_state}[kind]
                removed = torch.tensor(sorted(set(range(width)) - set(keep)), dtype=torch.long)
                if len(removed) == 0:
                    continue
                if kind == "state":  # x_proj output (b, l, d_inner + 2n): B of state j at d_inner + j
                    hooks += [s.x_proj.register_forward_hook(zero(blk.mixer.d_inner + removed, 2))
                              for s in blk.mixer.ssm]
                    continue
                # conv1d output: (b, d_inner, l + pad); act output: (b, l, hidden)
                mods = [s.conv1d for s in blk.mixer.ssm] if kind == "ssm" else [blk.mlp.act]
                hooks += [m.register_forward_hook(zero(removed, 1 if kind == "ssm" else 2)) for m in mods]
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()
