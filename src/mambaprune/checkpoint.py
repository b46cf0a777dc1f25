"""Checkpoints that rebuild their own model: config (pruned widths included) + weights + plan history.

The payload holds only tensors and plain containers/scalars, so it loads with ``torch.load(
weights_only=True)``: loading never runs code from the file. A file that needs more (a tampered pickle,
or an object saved by another tool) is refused with ``CheckpointError``; there is deliberately no
fallback to ``weights_only=False``. Writes are atomic (``records.atomic_write``), so an interrupted save never
leaves a truncated checkpoint under the final name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from .errors import CheckpointError
from .models.mamba import VisionMamba
from .records import atomic_write

__all__ = ["FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "load_state_dict_checked",
           "check_fits_data", "check_same_arch", "load_matching"]

FORMAT = "mambaprune-checkpoint/1"
_RESERVED = ("format", "arch", "config", "state_dict")


def _check_plain(value, where: str) -> None:
    """Raise TypeError unless ``value`` is made of what weights_only loading accepts."""
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: keys must be str or int, got {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}; checkpoints hold only tensors, dicts, lists, str, int, "
                    f"float, bool and None (convert it, e.g. float(x) or x.tolist())")


def save_checkpoint(model: nn.Module, path: str | os.PathLike, **extra) -> Path:
    """Write ``model`` (config + CPU state dict) and ``extra`` entries (``plans``: the plan history) atomically."""
    path = Path(path)
    clash = [k for k in extra if k in _RESERVED]
    if clash:
        raise ValueError(f"extra keys {clash} are reserved for the checkpoint itself; rename them")
    config = getattr(model, "config", None)
    if not isinstance(model, VisionMamba) or config is None:
        raise TypeError(f"save_checkpoint expects a VisionMamba, got {type(model).__name__}")
    payload = {"format": FORMAT, "arch": "VisionMamba", "config": dict(config),
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
               "plans": list(extra.pop("plans", None) or []), **extra}
    _check_plain(payload, "checkpoint")
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_state_dict_checked(model: nn.Module, state: Mapping, source: str = "state dict") -> nn.Module:
    """``load_state_dict`` (strict) with one readable error listing missing/unexpected keys and shape clashes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(f"{source} does not match the model it should load into ({'; '.join(parts)}). It was "
                              f"written for another architecture or other widths: rebuild the model from the "
                              f"config that produced these weights, or re-save them with save_checkpoint(model)")
    model.load_state_dict(state)
    return model


def _refusal_detail(message: str) -> tuple[bool, str]:
    """(asks for a Python global?, the one informative line) of torch's weights-only error message."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported global" in ln:
            return True, ln
    for i, ln in enumerate(lines):
        if ln.startswith("WeightsUnpickler error"):
            rest = ln.split(":", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return False, rest
    return False, lines[0] if lines else ""


def _read(path: Path, map_location):
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; check the path, or run the stage that writes it")
    never = ("It was NOT loaded, and this loader never retries with weights_only=False (that could run code "
             "from the file).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # every failure becomes one CheckpointError naming the file
        msg = str(e)
        if "weights only load failed" in msg.lower():
            wants_code, detail = _refusal_detail(msg)
            if wants_code:
                raise CheckpointError(
                    f"{path}: refused to load: the file asks to import or call a Python object that is not tensor "
                    f"data ({detail}), so it may have been tampered with or written by another tool. {never} Use a "
                    f"checkpoint written by save_checkpoint; if you wrote and trust this file, convert it in a "
                    f"separate, trusted step.") from None
            raise CheckpointError(
                f"{path}: refused to load: weights-only unpickling failed ({detail}); the file is truncated, "
                f"corrupt, or not written by torch.save. {never} Restore it or re-run the stage that writes "
                f"it.") from None
        first = msg.splitlines()[0] if msg else ""
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {first}); restore it or "
                              f"re-run the stage that writes it") from None


def load_checkpoint(path: str | os.PathLike, map_location="cpu", return_extra: bool = False):
    """Rebuild the VisionMamba stored at ``path`` (its widths from the stored config) → model, or
    (model, extra) with ``extra`` = every saved entry besides the model itself (``plans``, ...)."""
    path = Path(path)
    payload = _read(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        hint = (" It looks like a bare state dict: build the model and use load_state_dict_checked(model, state)."
                if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values())
                else "")
        raise CheckpointError(f"{path}: not a mambaprune checkpoint (format {found!r}, expected {FORMAT!r}); write "
                              f"checkpoints with mambaprune.save_checkpoint.{hint}")
    if payload.get("arch") != "VisionMamba":
        raise CheckpointError(f"{path}: architecture {payload.get('arch')!r} is not supported (expected "
                              f"'VisionMamba'); this file was written for another model class")
    try:
        model = VisionMamba(**payload["config"])
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: its stored config cannot build a VisionMamba ({e}); the file is from "
                              f"another version or was edited: re-save it with save_checkpoint") from None
    state = payload.get("state_dict")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: its state_dict is a {type(state).__name__}, not a mapping of tensors; the "
                              f"file was edited or written by another tool: re-save it with save_checkpoint")
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:  # training never saves these (fit stops first): such a file diverged elsewhere or was edited
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise CheckpointError(f"{path}: non-finite weights (inf/NaN) in {', '.join(bad[:3])}{more}; a model like "
                              f"this cannot train or predict. Restore the file or re-run the stage that writes it "
                              f"(if that run diverged, lower train.lr or enable train.grad_clip)")
    float_dtypes = {v.dtype for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    if len(float_dtypes) == 1:  # keep the saved precision (a float64 model reloads bit-identical)
        model = model.to(dtype=float_dtypes.pop())
    if isinstance(map_location, str | torch.device):
        model = model.to(map_location)
    load_state_dict_checked(model, state, source=f"{path}: state dict")
    model.eval()
    if return_extra:
        return model, {k: v for k, v in payload.items() if k not in _RESERVED}
    return model


# ---------------------------------------------------------------------------------------------- compatibility
_DATA_KEYS = ("img_size", "in_chans", "num_classes")
_ARCH_KEYS = (*_DATA_KEYS, "patch_size", "depth", "d_state", "d_conv", "bidirectional")
_WIDTH_KEYS = ("ssm_widths", "mlp_widths", "d_states", "embed_dim")  # what pruning changes (embed_dim included)


def check_fits_data(model: nn.Module, path: Path, meta: Mapping) -> None:
    """Refuse (CheckpointError) a checkpoint built for other images or classes than the prepared data/."""
    diff = [f"{k} {model.config[k]} vs data {meta[k]}" for k in _DATA_KEYS if model.config[k] != meta[k]]
    if diff:
        raise CheckpointError(f"{path} does not fit the prepared data ({', '.join(diff)}): it comes from a run on "
                              f"other data. Re-run the pipeline from pretrain (`dvc repro`), or prepare the data it "
                              f"was trained on (data.* in params.yaml)")


def _wider(width, ref_width) -> bool:
    """Whether a width (an int, or one per block) exceeds the reference's anywhere: pruning never widens."""
    if isinstance(width, int):
        return width > ref_width
    return len(width) != len(ref_width) or any(w > r for w, r in zip(width, ref_width))


def check_same_arch(model: nn.Module, path: Path, ref: nn.Module, ref_path: Path, widths: bool = False) -> None:
    """Refuse (CheckpointError) a checkpoint that is not the same network as ``ref``: e.g. a round's input left
    over from a run with another model.* size. Its prunable widths (``_WIDTH_KEYS``: the embedding width and the
    per-block state sizes among them) may be smaller than ``ref``'s, never larger; with ``widths`` they must be
    the same."""
    keys = (*_ARCH_KEYS, *_WIDTH_KEYS) if widths else _ARCH_KEYS
    diff = [f"{k} {model.config[k]} vs {ref.config[k]}" for k in keys if model.config[k] != ref.config[k]]
    if not widths:
        diff += [f"{k} {model.config[k]} vs {ref.config[k]}" for k in _WIDTH_KEYS
                 if _wider(model.config[k], ref.config[k])]
    if diff:
        raise CheckpointError(f"{path} and {ref_path} are not the same architecture ({', '.join(diff)}): they come "
                              f"from different runs. Re-run the pipeline from pretrain (`dvc repro`)")


def load_matching(path: Path, ref: nn.Module, ref_path: Path, *, widths: bool = False, return_extra: bool = False):
    """``load_checkpoint(path)``, refused (CheckpointError) unless it is the same network as ``ref`` from
    ``ref_path`` (``check_same_arch``; ``widths``: the same pruned widths too)."""
    loaded = load_checkpoint(path, return_extra=return_extra)
    check_same_arch(loaded[0] if return_extra else loaded, path, ref, ref_path, widths)
    return loaded
