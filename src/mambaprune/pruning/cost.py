"""What a cut costs before any finetuning: the accuracy of a model and of its pruned copy on the same batches.

Why it matters most for ``embed``: the other kinds remove units whose activations are simply gone (state and
channel pruning equal a masking of the dense model, exactly), but removing residual channels also changes what
every LayerNorm normalises over. The pruned model's LayerNorms compute mean and variance over the kept channels
only; nothing corrects for the removed ones (no rescaling, no statistics from the dense model). So even channels
whose weights are small move the kept channels' normalisation, and the cut's accuracy cost before finetuning is
a number to measure, which ``accuracy_cost`` does; finetuning then adapts the weights to the new statistics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
import torch.nn as nn

from ..counting import size_report
from .api import prune_selection
from .plan import apply_plan

__all__ = ["accuracy", "accuracy_cost"]


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable, device: torch.device | str) -> float:
    """Top-1 accuracy over ``(images, labels)`` batches in eval mode (bf16 autocast on CUDA, as the pipeline
    evaluates; fp32 on CPU). The model's train/eval mode is restored."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct = total = 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    try:
        for x, y in batches:
            with autocast:
                logits = model(x.to(device))
            correct += int((logits.argmax(1).cpu() == y.cpu()).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("accuracy: the batches held no samples")
    return correct / total


def accuracy_cost(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu", **prune_kwargs) -> dict:
    """Prune ``model`` as ``prune_model(model, **prune_kwargs)`` does (``api.prune_selection``, then the cut) and
    measure both on ``batches`` (re-iterated: pass a list or a loader, not a one-shot iterator) → dense_acc,
    pruned_acc, acc_drop (points of accuracy as a fraction), the pruned model's ``counting.size_report`` against
    ``model`` (params, flops, dense_params, dense_flops, param_reduction, flop_reduction, widths), its
    ``embed_dim`` and ``d_states``, the plan and the selection's warnings. ``model`` is not modified."""
    selection = prune_selection(model, **prune_kwargs)
    pruned = apply_plan(model, selection.plan)
    dense_acc, pruned_acc = accuracy(model, batches, device), accuracy(pruned, batches, device)
    return {"dense_acc": dense_acc, "pruned_acc": pruned_acc, "acc_drop": dense_acc - pruned_acc,
            **size_report(pruned, model), "embed_dim": pruned.config["embed_dim"],
            "d_states": list(pruned.config["d_states"]), "plan": selection.plan, "warnings": selection.warnings}
