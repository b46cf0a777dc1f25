"""The reference that physical pruning is checked against: the dense model with removed units zeroed."""

from __future__ import annotations

import torch


def masked_forward(model, plan, x):
    """Dense forward with the removed units' activations forced to zero (SSM: every direction's conv1d output
    channel; MLP: the GELU output neuron)."""
    hooks = []

    def zero(idx, dim):
        return lambda module, inputs, out: out.index_fill(dim, idx, 0.0)

    try:
        for kind, entries in plan.items():
            for i, keep in enumerate(entries or []):
                if keep is None:
                    continue
                blk = model.blocks[i]
                width = blk.mixer.d_inner if kind == "ssm" else blk.mlp.fc1.out_features
                removed = torch.tensor(sorted(set(range(width)) - set(keep)), dtype=torch.long)
                if len(removed) == 0:
                    continue
                # conv1d output: (b, d_inner, l + pad); act output: (b, l, hidden)
                mods = [s.conv1d for s in blk.mixer.ssm] if kind == "ssm" else [blk.mlp.act]
                hooks += [m.register_forward_hook(zero(removed, 1 if kind == "ssm" else 2)) for m in mods]
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()
