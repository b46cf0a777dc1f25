"""Vision Mamba classifier with a real selective scan.

Mamba: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023).
Vision Mamba (bidirectional option): Zhu et al., "Vision Mamba" (ICML 2024).

Shapes follow the reference design so parameter counts compare exactly (mamba_small: 16,488,394 for
10 classes). Every prunable width is a constructor argument (``ssm_widths``, ``mlp_widths``, ``d_states``: one
entry per block; ``embed_dim``), so a pruned model is the same class built with smaller widths. ``d_state`` stays
the dense state size; ``d_states`` (default: ``d_state`` in every block) is what each block really has.

Δ initialisation: the reference has no Δ bias parameter. To start dt log-uniform in [1e-3, 1e-1]
without adding parameters, each scan direction holds a fixed per-channel buffer ``dt_bias`` =
softplus⁻¹(dt₀) with dt₀ ~ LogUniform(1e-3, 1e-1); it is added to Δ_raw before the softplus and is
pruned with its channel like any other per-channel tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model
from .scan import resolve_impl, selective_scan

__all__ = ["VisionMamba", "MambaMixer", "SelectiveSSM", "Mlp", "Block", "DropPath"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class SelectiveSSM(nn.Module):
    """One scan direction: causal depthwise conv + SiLU, x_proj → (Δ, B, C), selective scan, gate."""

    def __init__(self, d_inner: int, d_state: int = 16, d_conv: int = 4,
                 dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        self.d_inner, self.d_state, self.d_conv = d_inner, d_state, d_conv
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        # x_proj output layout: [Δ (d_inner) | B (d_state) | C (d_state)]
        self.x_proj = nn.Linear(d_inner, d_inner + 2 * d_state, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.register_buffer("dt_bias", _inverse_softplus(dt))
        self.scan_impl = "auto"
        self._A_cache: tuple | None = None  # (A_log version key, A) for eager inference, see ``A``

    def A(self) -> torch.Tensor:
        """A = -exp(A_log) in fp32 (d_inner, d_state).

        Eager inference (autograd off, not compiling, not capturing a CUDA graph) reuses the A computed from the
        same A_log (same version counter, storage and dtype), which saves two kernel launches per direction and block
        on the host. An edit through ``A_log.data`` bypasses the version counter: edit weights in place under
        ``torch.no_grad()`` instead (as optimizers and ``load_state_dict`` do)."""
        A_log = self.A_log
        if (torch.is_grad_enabled() or torch.compiler.is_compiling()
                or (A_log.is_cuda and torch.cuda.is_current_stream_capturing())):
            return -torch.exp(A_log.float())
        key = (A_log._version, A_log.data_ptr(), A_log.dtype, A_log.device)
        if self._A_cache is None or self._A_cache[0] != key:
            self._A_cache = (key, -torch.exp(A_log.float()))
        return self._A_cache[1]

    def conv_silu(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU(causal depthwise conv) on (b, l, d_inner): a fused Triton kernel along with the Triton scan (no
        transposes, see conv_triton.py), else ``self.conv1d`` on the transposed input."""
        if resolve_impl(self.scan_impl, x) == "triton":
            from .conv_triton import causal_conv1d_silu_triton

            return causal_conv1d_silu_triton(x, self.conv1d.weight.squeeze(1), self.conv1d.bias)
        l = x.shape[1]
        return F.silu(self.conv1d(x.transpose(1, 2))[..., :l].transpose(1, 2))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x, z: (b, l, d_inner) → gated scan output (b, l, d_inner)."""
        x = self.conv_silu(x)
        delta, B, C = self.x_proj(x).split([self.d_inner, self.d_state, self.d_state], dim=-1)
        return selective_scan(x, delta, self.A(), B, C, self.D, z=z, delta_bias=self.dt_bias, impl=self.scan_impl)


class MambaMixer(nn.Module):
    """in_proj → (x, z); one scan per direction; sum; out_proj. Bidirectional = Vim's reversed second scan."""

    def __init__(self, dim: int, d_inner: int, d_state: int = 16, d_conv: int = 4, bidirectional: bool = False):
        super().__init__()
        self.d_inner = d_inner
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.ssm = nn.ModuleList(
            SelectiveSSM(d_inner, d_state, d_conv) for _ in range(2 if bidirectional else 1)
        )
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(x).chunk(2, dim=-1)
        y = self.ssm[0](x, z)
        for backward in self.ssm[1:]:
            y = y + backward(x.flip(1), z.flip(1)).flip(1)
        return self.out_proj(y)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def add_layer_norm(resid: torch.Tensor, branch: torch.Tensor | None, norm: nn.LayerNorm, fused: bool,
                   feeds_matmul: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm(resid + branch), resid + branch); ``branch=None`` adds nothing. ``fused``: one Triton kernel for the add
    and the norm (eager CUDA, see norm_triton.py); the plain ops otherwise, and always under ``torch.compile``, whose
    inductor fuses them itself. ``feeds_matmul``: under CUDA autocast the fused kernel writes the normed output in
    the autocast dtype the matmul would cast it to anyway (the plain LayerNorm writes fp32)."""
    if fused and not torch.compiler.is_compiling():
        from .norm_triton import add_layer_norm_triton

        if feeds_matmul and resid.is_cuda and torch.is_autocast_enabled("cuda"):
            out_dtype = torch.get_autocast_dtype("cuda")
        else:
            out_dtype = torch.result_type(resid, branch if branch is not None else resid)
        return add_layer_norm_triton(resid, branch, norm.weight, norm.bias, norm.eps, out_dtype)
    if branch is not None:
        resid = resid + branch
    return norm(resid), resid


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016; timm's ``DropPath``): in training, each sample's residual branch is
    dropped with probability ``p`` and the kept ones scaled by 1/(1 − p), so the expected sum is unchanged. The
    draw uses the default generator of the branch's device, which CUDA-graph replays advance correctly."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """Pre-norm block on the residual stream: x + mixer(norm1(x)), then + mlp(norm2(·)).

    The block's last add is left to the next block (or the final norm), which takes it as ``branch`` so that every
    residual add fuses with the LayerNorm after it (``add_layer_norm``). ``drop_path``: stochastic depth on both
    branches (0 = off: the layer is an identity)."""

    def __init__(self, dim: int, d_inner: int, mlp_hidden: int, d_state: int, d_conv: int, bidirectional: bool,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = MambaMixer(dim, d_inner, d_state, d_conv, bidirectional)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_hidden)
        self.drop_path = DropPath(drop_path)

    def fused_norms(self, x: torch.Tensor) -> bool:
        """Whether the norms run as the fused Triton kernel: together with the Triton scan."""
        return resolve_impl(self.mixer.ssm[0].scan_impl, x) == "triton"

    def forward(self, resid: torch.Tensor, branch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(residual stream, branch still to add to it) → the same pair after this block."""
        fused = self.fused_norms(resid)
        h, resid = add_layer_norm(resid, branch, self.norm1, fused, feeds_matmul=True)
        h, resid = add_layer_norm(resid, self.drop_path(self.mixer(h)), self.norm2, fused, feeds_matmul=True)
        return resid, self.drop_path(self.mlp(h))


class VisionMamba(nn.Module):
    """Patch embedding → Mamba blocks → LayerNorm → mean over tokens → linear head.

    Input: float images in [0, 1], shape (b, in_chans, img_size, img_size); normalised inside with the
    ``norm_mean``/``norm_std`` buffers (saved with the weights, so a checkpoint carries its data stats). Left out,
    they are CIFAR's for 3 channels and 0.5/0.5 per channel (to [-1, 1]) otherwise; the pipeline passes its own.
    ``drop_path_rate``: stochastic depth, rising linearly from 0 at the first block to this at the last (timm's
    rule); it adds no parameters, so it changes no shape or count.
    """

    def __init__(self, img_size: int = 32, patch_size: int = 4, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 192, depth: int = 24, d_state: int = 16, d_conv: int = 4,
                 ssm_widths: list[int] | None = None, mlp_widths: list[int] | None = None,
                 bidirectional: bool = False, norm_mean=None, norm_std=None, drop_path_rate: float = 0.0,
                 d_states: list[int] | None = None):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        ssm_widths = list(ssm_widths) if ssm_widths is not None else [2 * embed_dim] * depth
        mlp_widths = list(mlp_widths) if mlp_widths is not None else [4 * embed_dim] * depth
        if len(ssm_widths) != depth or len(mlp_widths) != depth:
            raise ValueError(f"ssm_widths and mlp_widths need {depth} entries (one per block), "
                             f"got {len(ssm_widths)} and {len(mlp_widths)}")
        d_states = list(d_states) if d_states is not None else [d_state] * depth
        if len(d_states) != depth or any(int(n) < 1 for n in d_states):
            raise ValueError(f"d_states needs {depth} entries (one state size >= 1 per block), got {d_states}")
        if norm_mean is None:
            norm_mean = CIFAR_MEAN if in_chans == 3 else (0.5,) * in_chans
        if norm_std is None:
            norm_std = CIFAR_STD if in_chans == 3 else (0.5,) * in_chans
        norm_mean, norm_std = list(norm_mean), list(norm_std)
        if len(norm_mean) != in_chans or len(norm_std) != in_chans:
            raise ValueError(f"norm_mean/norm_std need {in_chans} entries (one per input channel), got "
                             f"{len(norm_mean)} and {len(norm_std)}; pass lists of {in_chans} or leave them out")
        self.config = dict(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                           embed_dim=embed_dim, depth=depth, d_state=d_state, d_conv=d_conv,
                           ssm_widths=[int(w) for w in ssm_widths], mlp_widths=[int(w) for w in mlp_widths],
                           d_states=[int(n) for n in d_states],
                           bidirectional=bool(bidirectional), norm_mean=[float(m) for m in norm_mean],
                           norm_std=[float(s) for s in norm_std], drop_path_rate=float(drop_path_rate))
        self.num_classes, self.num_features = num_classes, embed_dim
        self.register_buffer("norm_mean", torch.tensor(norm_mean).view(1, -1, 1, 1))
        self.register_buffer("norm_std", torch.tensor(norm_std).view(1, -1, 1, 1))
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, (img_size // patch_size) ** 2, embed_dim))
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        rates = [drop_path_rate * i / max(1, depth - 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, di, hm, n, d_conv, bidirectional, dp)
            for di, hm, n, dp in zip(ssm_widths, mlp_widths, d_states, rates)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @property
    def ssm_widths(self) -> list[int]:
        return [blk.mixer.d_inner for blk in self.blocks]

    @property
    def mlp_widths(self) -> list[int]:
        return [blk.mlp.fc1.out_features for blk in self.blocks]

    @property
    def d_states(self) -> list[int]:
        return [blk.mixer.ssm[0].d_state for blk in self.blocks]

    def set_scan_impl(self, impl: str) -> None:
        for m in self.modules():
            if isinstance(m, SelectiveSSM):
                m.scan_impl = impl

    def no_weight_decay(self) -> set[str]:
        """Names of parameters kept out of weight decay: SSM dynamics (A_log, D), positions, 1-D tensors."""
        return {n for n, p in self.named_parameters()
                if p.ndim < 2 or n.endswith(("A_log", "D")) or n == "pos_embed"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.norm_mean) / self.norm_std
        resid = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        branch = None
        for blk in self.blocks:
            resid, branch = blk(resid, branch)
        return add_layer_norm(resid, branch, self.norm, self.blocks[-1].fused_norms(resid))[0]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _create(num_classes: int, img_size: int, defaults: dict, overrides: dict) -> VisionMamba:
    return VisionMamba(num_classes=num_classes, img_size=img_size, **{**defaults, **overrides})


@register_model
def mamba_tiny(num_classes: int = 10, img_size: int = 32, **kwargs) -> VisionMamba:
    return _create(num_classes, img_size, dict(embed_dim=96, depth=12, d_state=8), kwargs)


@register_model
def mamba_small(num_classes: int = 10, img_size: int = 32, **kwargs) -> VisionMamba:
    return _create(num_classes, img_size, dict(embed_dim=192, depth=24, d_state=16), kwargs)


@register_model
def mamba_base(num_classes: int = 10, img_size: int = 32, **kwargs) -> VisionMamba:
    return _create(num_classes, img_size, dict(embed_dim=384, depth=24, d_state=16), kwargs)
