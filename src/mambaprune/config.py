"""Typed, validated parameters: ``params.yaml`` → dataclasses, one per section.

Every field carries its meaning (``help``) and, where it applies, its allowed values (``choices``) or range.
Unknown keys, wrong types and out-of-range values raise ``ConfigError`` with one message naming the key,
the value and what is allowed, before any work starts. This module is the only one that reads params.yaml.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError

__all__ = ["ConfigError", "PRUNE_KINDS", "target_kinds", "Params", "DataCfg", "ModelCfg", "TrainCfg", "PretrainCfg",
           "PruneCfg", "FinetuneCfg", "EvaluateCfg", "load_params", "parse_params"]


REWIND_EPOCHS = 5  # pretrain keeps snapshots of epochs 0..5 for `prune.rewind: epoch`
# The unit kinds ``prune.target`` combines (``pruning.units.KINDS``; kept here so that loading params imports no
# torch; tests/test_config.py checks they agree). ``both`` is the older name of ``ssm+mlp``.
PRUNE_KINDS = ("ssm", "mlp", "state", "embed")
_KIND_RATIOS = {"mlp": "mlp_ratio", "state": "state_ratio", "embed": "embed_ratio"}  # per-kind final ratios
SPEED_MODES = ("eager", "compiled", "one_call")  # the ways a user runs a model (speed.MODES is this tuple)
HEADLINE_SPEED_MODE = "one_call"  # the evaluate stage's `speedup`: what optimize_for_inference gives


def _f(default, help: str, choices: tuple | None = None, lo=None, hi=None, lo_open=False, hi_open=False,
       coerce=None):
    meta = dict(help=help, choices=choices, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, coerce=coerce)
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _on_off(value):
    """YAML reads a bare ``on``/``off`` (what ``-S train.cuda_graph=off`` writes) as a boolean: take it as meant."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


@dataclass(frozen=True)
class DataCfg:
    name: str = _f("digits", "dataset", choices=("digits", "cifar10", "cifar100", "imagefolder"))
    root: str = _f(".cache/datasets", "folder holding CIFAR archives or an imagefolder tree (train/, test/)")
    img_size: int = _f(16, "images are resized to img_size x img_size", lo=4, hi=512)
    val_fraction: float = _f(0.1, "share of the train split held out for validation", lo=0.0, hi=0.5,
                             lo_open=True)
    download: bool = _f(True, "cifar: try torchvision's download when the files are absent")


@dataclass(frozen=True)
class ModelCfg:
    name: str = _f("mamba_tiny", "model size", choices=("mamba_tiny", "mamba_small", "mamba_base"))
    embed_dim: int | None = _f(None, "token width; null = the size's default", lo=8, hi=4096)
    depth: int | None = _f(None, "number of blocks; null = the size's default", lo=1, hi=256)
    d_state: int | None = _f(None, "SSM state size; null = the size's default", lo=1, hi=256)
    patch_size: int = _f(4, "patch size of the patch embedding", lo=1, hi=64)
    bidirectional: bool = _f(False, "Vim-style second scan over the reversed token sequence")
    drop_path: float = _f(0.0, "stochastic depth: drop rate of the last block's branches (linear from 0)",
                          lo=0.0, hi=1.0, hi_open=True)

    def overrides(self) -> dict[str, Any]:
        """Constructor overrides for ``create_model`` (None = keep the registry size's default)."""
        out = {k: getattr(self, k) for k in ("embed_dim", "depth", "d_state") if getattr(self, k) is not None}
        return dict(out, patch_size=self.patch_size, bidirectional=self.bidirectional,
                    drop_path_rate=self.drop_path)


@dataclass(frozen=True)
class TrainCfg:
    batch_size: int = _f(64, "training batch size (global, across devices)", lo=1, hi=65536)
    optimizer: str = _f("adamw", "optimizer", choices=("adamw", "sgd"))
    lr: float = _f(0.003, "peak learning rate", lo=0.0, hi=10.0, lo_open=True)
    weight_decay: float = _f(0.05, "decoupled (adamw) or L2 (sgd) weight decay", lo=0.0, hi=1.0)
    momentum: float = _f(0.9, "sgd momentum", lo=0.0, hi=1.0, hi_open=True)
    warmup_epochs: float = _f(1.0, "linear warm-up length in epochs", lo=0.0, hi=1000.0)
    schedule: str = _f("cosine", "lr schedule after warm-up", choices=("cosine", "constant"))
    min_lr_ratio: float = _f(0.01, "cosine ends at lr * min_lr_ratio", lo=0.0, hi=1.0)
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing", lo=0.0, hi=1.0, hi_open=True)
    grad_clip: float = _f(1.0, "max global gradient norm; 0 disables", lo=0.0, hi=1e6)
    crop_padding: int = _f(1, "random-crop zero padding in pixels; 0 disables", lo=0, hi=64)
    hflip: bool = _f(False, "random horizontal flip")
    auto_augment: str = _f("none", "per-image policy: TrivialAugmentWide or RandAugment (torchvision's op tables)",
                           choices=("none", "trivialaugment", "randaugment"))
    randaugment_ops: int = _f(2, "randaugment: ops per image (N)", lo=1, hi=10)
    randaugment_magnitude: int = _f(9, "randaugment: magnitude bin (M) of 31", lo=0, hi=30)
    random_erasing: float = _f(0.0, "probability of erasing a random box of each image (noise fill)", lo=0.0, hi=1.0)
    mixup_alpha: float = _f(0.0, "Mixup Beta(a, a); 0 disables", lo=0.0, hi=100.0)
    cutmix_alpha: float = _f(0.0, "CutMix Beta(a, a); 0 disables (with both on, each batch picks one, 50/50)",
                             lo=0.0, hi=100.0)
    mix_prob: float = _f(1.0, "probability that a batch is mixed when mixup or cutmix is on", lo=0.0, hi=1.0)
    device: str = _f("auto", "device to train on", choices=("auto", "cpu", "cuda"))
    compile: bool = _f(False, "torch.compile the model")
    cuda_graph: str = _f("auto", "replay each training step as a CUDA graph (auto: on CUDA without DDP)",
                         choices=("auto", "on", "off"), coerce=_on_off)


@dataclass(frozen=True)
class PretrainCfg:
    epochs: int = _f(20, "dense training epochs", lo=1, hi=10000)


@dataclass(frozen=True)
class PruneCfg:
    method: str = _f("refill", "pruning method", choices=("magnitude", "refill", "rsst"))
    target: str = _f("both", "unit kinds to prune: any of ssm, mlp, state, embed joined with '+' (e.g. "
                     "ssm+mlp+state); both = ssm+mlp")
    ratio: float = _f(0.5, "final fraction of units removed per targeted kind", lo=0.0, hi=1.0, hi_open=True)
    mlp_ratio: float | None = _f(None, "final MLP ratio; null = ratio", lo=0.0, hi=1.0, hi_open=True)
    state_ratio: float | None = _f(None, "final ratio of SSM state dimensions (per block); null = ratio", lo=0.0,
                                   hi=1.0, hi_open=True)
    embed_ratio: float | None = _f(None, "final ratio of residual (embedding) channels; null = ratio", lo=0.0,
                                   hi=1.0, hi_open=True)
    importance: str = _f("l1", "unit importance", choices=("l1", "l2", "taylor", "random"))
    scope: str = _f("global", "ranking scope", choices=("global", "layerwise"))
    min_keep: int = _f(8, "minimum units kept in any layer", lo=1, hi=65536)
    round_to: int = _f(8, "kept widths are multiples of this", lo=1, hi=1024)
    rewind: str = _f("none", "weights a round restarts from", choices=("init", "epoch", "none"))
    rewind_epoch: int = _f(1, "rewind: epoch -> pretrain checkpoint of this epoch", lo=0, hi=10000)
    epochs: int = _f(4, "training epochs per round", lo=0, hi=10000)
    fillback_rate: float = _f(0.0, "refill: per layer, the share of the units this round would remove (the "
                              "schedule's count) that come back instead, chosen by refill_criterion: 0 keeps "
                              "the schedule's count, 1 removes nothing", lo=0.0, hi=1.0)
    refill_criterion: str = _f("remain", "refill: unit ranking", choices=("remain", "magnitude"))
    rsst_penalty: str = _f("group_l2", "rsst: penalty on target groups", choices=("group_l2", "group_lasso"))
    rsst_schedule: str = _f("exp", "rsst: strength schedule", choices=("exp", "poly", "linear", "constant"))
    rsst_strength: float = _f(1e4, "rsst, decoupled: F, the factor by which the penalty alone shrinks the "
                              "target groups over a round (step t of N multiplies them by "
                              "F^(-s(t/N)/sum_u s(u/N)), s the schedule's shape, s(1) = 1); gradient: the "
                              "penalty's final coefficient lambda", lo=0.0, hi=1e12)
    rsst_update: str = _f("decoupled", "rsst: decoupled (a proximal shrink after each optimizer step, its total "
                          "fixed by rsst_strength) or gradient (the penalty's gradient through the optimizer)",
                          choices=("decoupled", "gradient"))
    rsst_exponent: float = _f(4.0, "rsst: exponent k of exp/poly schedules", lo=0.0, hi=100.0, lo_open=True)
    recover_epochs: int = _f(0, "rsst: training epochs after the cut", lo=0, hi=10000)
    calib_batches: int = _f(4, "taylor: calibration batches", lo=1, hi=100000)
    rounds: dict = _f({"r1": "pretrained", "r2": "r1"}, "round -> checkpoint it starts from")
    last: str = _f("r2", "the round finetune starts from")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The unit kinds ``target`` names, in ``PRUNE_KINDS`` order (``target_kinds``)."""
        return target_kinds(self.target)

    def final_ratio(self, kind: str) -> float:
        """Fraction of ``kind``'s original units removed after the last round: for a targeted kind its own ratio
        (``mlp_ratio``, ``state_ratio``, ``embed_ratio``) when set, else ``ratio``; 0 for a kind not targeted."""
        if kind not in self.kinds:
            return 0.0
        own = getattr(self, _KIND_RATIOS[kind]) if kind in _KIND_RATIOS else None
        return self.ratio if own is None else own

    @property
    def rewinds(self) -> bool:
        """Whether a round restarts its retraining from earlier weights. Never for RSST: its penalty has already
        driven the removed groups towards zero on the trained weights, which the round keeps training."""
        return self.rewind != "none" and self.method != "rsst"

    def round_index(self, name: str) -> int:
        """1-based position of a round in its chain (r1 → 1); ConfigError for a name that is not a round."""
        if name not in self.rounds:
            raise ConfigError(f"round {name!r} is not in prune.rounds ({', '.join(self.rounds)})")
        i, cur = 0, name
        while cur != "pretrained":
            i, cur = i + 1, self.rounds[cur]
        return i

    @property
    def num_rounds(self) -> int:
        return self.round_index(self.last)


@dataclass(frozen=True)
class FinetuneCfg:
    epochs: int = _f(3, "finetuning epochs after the last round", lo=0, hi=10000)
    lr_scale: float = _f(0.5, "finetune lr = train.lr * lr_scale", lo=0.0, hi=10.0, lo_open=True)


@dataclass(frozen=True)
class EvaluateCfg:
    batch_size: int = _f(256, "evaluation batch size", lo=1, hi=65536)
    throughput_batch: int = _f(64, "batch size of the throughput measurement", lo=1, hi=65536)
    throughput_iters: int = _f(20, "timed iterations of the throughput measurement", lo=1, hi=100000)
    speed_modes: list = _f(["eager", "one_call"], "the ways the dense and final models are timed, side by side: "
                           "eager (model(x)), compiled (torch.compile; minutes on a CPU), one_call "
                           "(optimize_for_inference: a CUDA graph; eager on CPU); must include one_call, whose "
                           "speedup is the headline's", choices=SPEED_MODES)


@dataclass(frozen=True)
class Params:
    seed: int = _f(0, "seed for splits, init, batches and augmentation", lo=0, hi=2**31 - 1)
    data: DataCfg = field(default_factory=DataCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    pretrain: PretrainCfg = field(default_factory=PretrainCfg)
    prune: PruneCfg = field(default_factory=PruneCfg)
    finetune: FinetuneCfg = field(default_factory=FinetuneCfg)
    evaluate: EvaluateCfg = field(default_factory=EvaluateCfg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _describe(f: dataclasses.Field) -> str:
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(repr(c) for c in m["choices"])
    if m.get("lo") is not None:
        left = "(" if m["lo_open"] else "["
        right = ")" if m["hi_open"] else "]"
        return f"in {left}{m['lo']}, {m['hi']}{right}"
    return ""


def _check_value(key: str, f: dataclasses.Field, typ, value):
    """Return ``value`` coerced to the field's type, or raise ConfigError."""
    if f.metadata.get("coerce") is not None:
        value = f.metadata["coerce"](value)
    optional = get_origin(typ) is Union or type(typ).__name__ == "UnionType"
    if optional:
        if value is None:
            return None
        typ = next(t for t in get_args(typ) if t is not type(None))
    elif value is None:
        raise ConfigError(f"{key} must not be null ({f.metadata['help']})")
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer {_describe(f)}, got {value!r}")
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number {_describe(f)}, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be finite, got {value!r}")
        value = float(value)
    elif typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string ({f.metadata['help']}), got {value!r}")
    elif typ is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping ({f.metadata['help']}), got {value!r}")
    elif typ is list:
        if not isinstance(value, list) or not value or len(set(map(str, value))) < len(value):
            raise ConfigError(f"{key} must be a non-empty list without repeats ({f.metadata['help']}), "
                              f"got {value!r}")
    m = f.metadata
    if m.get("choices") and any(v not in m["choices"] for v in (value if typ is list else [value])):
        raise ConfigError(f"{key} must be {'a list, each ' if typ is list else ''}{_describe(f)}, got {value!r}")
    if m.get("lo") is not None:
        lo, hi = m["lo"], m["hi"]
        bad = value < lo or value > hi or (m["lo_open"] and value == lo) or (m["hi_open"] and value == hi)
        if bad:
            raise ConfigError(f"{key} must be {_describe(f)}, got {value!r}")
    return value


def _build(cls, raw: Any, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'params'} must be a mapping of keys to values, got {raw!r}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown key {prefix}{key!s}; allowed keys: {', '.join(known)}")
    kwargs = {}
    for name, f in known.items():
        if name not in raw:
            continue
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, raw[name], f"{prefix}{name}.")
        else:
            kwargs[name] = _check_value(f"{prefix}{name}", f, typ, raw[name])
    return cls(**kwargs)


def target_kinds(target: str) -> tuple[str, ...]:
    """The unit kinds of a ``prune.target``: kinds joined with '+' (any order, each once), or ``both`` (=
    ssm+mlp) → tuple in ``PRUNE_KINDS`` order; ConfigError naming the bad part otherwise."""
    if target == "both":
        return ("ssm", "mlp")
    parts = [part.strip() for part in str(target).split("+")]
    allowed = f"use kinds from {', '.join(PRUNE_KINDS)} joined with '+', e.g. ssm+mlp+state (or both = ssm+mlp)"
    unknown = [part for part in parts if part not in PRUNE_KINDS]
    if unknown:
        raise ConfigError(f"prune.target {target!r}: unknown kind {unknown[0]!r}; {allowed}")
    repeated = sorted({part for part in parts if parts.count(part) > 1})
    if repeated:
        raise ConfigError(f"prune.target {target!r} names {', '.join(repeated)} more than once; {allowed}")
    return tuple(kind for kind in PRUNE_KINDS if kind in parts)


def _check_target(p: PruneCfg) -> None:
    """``prune.target`` parses, and a per-kind ratio is set only for a kind it targets: a ratio for a kind that
    is not pruned would do nothing, which is an error here rather than a run that silently ignores it."""
    kinds = target_kinds(p.target)
    for kind, key in _KIND_RATIOS.items():
        if getattr(p, key) is not None and kind not in kinds:
            raise ConfigError(f"prune.{key} is {getattr(p, key)!r} but prune.target {p.target!r} does not prune "
                              f"{kind}: add '+{kind}' to prune.target, or set prune.{key} to null")


def _check_rounds(p: PruneCfg) -> None:
    if not p.rounds:
        raise ConfigError("prune.rounds must name at least one round, e.g. {r1: pretrained}")
    for name, parent in p.rounds.items():
        if not isinstance(name, str) or not isinstance(parent, str):
            raise ConfigError(f"prune.rounds entries must be names, got {name!r}: {parent!r}")
        if parent != "pretrained" and parent not in p.rounds:
            raise ConfigError(f"prune.rounds.{name} starts from {parent!r}, which is neither 'pretrained' "
                              f"nor a round; allowed: pretrained, {', '.join(p.rounds)}")
    children = list(p.rounds.values())
    dup = {c for c in children if children.count(c) > 1}
    if dup:
        raise ConfigError(f"prune.rounds must form one chain; {sorted(dup)} start more than one round")
    for name in p.rounds:  # walk back to 'pretrained', catching cycles
        seen, cur = set(), name
        while cur != "pretrained":
            if cur in seen:
                raise ConfigError(f"prune.rounds has a cycle through {name!r}")
            seen.add(cur)
            cur = p.rounds[cur]
    if p.last not in p.rounds:
        raise ConfigError(f"prune.last must be one of the rounds ({', '.join(p.rounds)}), got {p.last!r}")
    if p.last in children:
        raise ConfigError(f"prune.last must be the final round of the chain, but {p.last!r} starts another")


def _check_rewind(params: Params) -> None:
    """`prune.rewind: epoch` needs a snapshot pretrain keeps: say so before pretraining runs, not after."""
    p, limit = params.prune, min(REWIND_EPOCHS, params.pretrain.epochs)
    if p.rewinds and p.rewind == "epoch" and p.rewind_epoch > limit:
        raise ConfigError(f"prune.rewind_epoch must be in [0, {limit}] (pretrain keeps snapshots of its first "
                          f"{REWIND_EPOCHS} epochs, and pretrain.epochs is {params.pretrain.epochs}), "
                          f"got {p.rewind_epoch}")


def _check_rsst(p: PruneCfg) -> None:
    """The decoupled update is a shrink factor of the group-L2 penalty: say so at load, not at round 1."""
    if p.method != "rsst" or p.rsst_update != "decoupled":
        return
    if p.rsst_penalty != "group_l2":
        raise ConfigError(f"prune.rsst_penalty {p.rsst_penalty!r} needs prune.rsst_update: gradient (the decoupled "
                          "update is the group_l2 penalty's proximal step)")
    if p.rsst_strength < 1.0:
        raise ConfigError(f"prune.rsst_strength must be >= 1 with prune.rsst_update: decoupled (it is the factor "
                          f"by which a round shrinks the target groups; 1 = no shrink), got {p.rsst_strength!r}")


def _check_speed_modes(e: EvaluateCfg) -> None:
    """The headline ``speedup`` is one mode's: it must be timed, whatever else is."""
    if HEADLINE_SPEED_MODE not in e.speed_modes:
        raise ConfigError(f"evaluate.speed_modes must include {HEADLINE_SPEED_MODE!r} (the headline speedup is the "
                          f"one-call path's: optimize_for_inference, eager on CPU), got {e.speed_modes!r}")


def parse_params(raw: Any) -> Params:
    """Validate a params mapping (as read from YAML) into ``Params``."""
    params = _build(Params, raw, "")
    _check_target(params.prune)
    _check_rounds(params.prune)
    _check_rewind(params)
    _check_rsst(params.prune)
    _check_speed_modes(params.evaluate)
    if params.data.img_size % params.model.patch_size:
        raise ConfigError(f"data.img_size ({params.data.img_size}) must be a multiple of model.patch_size "
                          f"({params.model.patch_size})")
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found: run from the project root or pass the path to params.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    return parse_params(raw)
