"""Selective scan (Mamba, Gu & Dao 2023) behind one function with interchangeable implementations.

Dimension glossary: b batch, l tokens, d channels (the SSM inner width d_inner), n state size.

    delta = softplus(delta_raw + delta_bias)          (b, l, d)
    A     = -exp(A_log)                                (d, n)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      h: (b, d, n)
    y_t   = <C_t, h_t> + D * u_t                        (b, l, d)
    out   = y * silu(z)                                 when a gate z is given

Implementations:
- ``ref``: plain sequential loop with autograd; any dtype (float64 for tests). The ground truth.
- ``cpu``: the fast path for CPUs (see ``scan_cpu.py``).
- ``triton``: fused CUDA kernel with its own backward (see ``scan_triton.py``).
``auto`` picks triton on CUDA tensors when Triton imports, otherwise cpu.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan", "selective_scan_ref", "resolve_impl", "SCAN_IMPLS"]

SCAN_IMPLS = ("auto", "ref", "cpu", "triton")


def selective_scan_ref(u, delta, A, B, C, D, z=None, delta_bias=None):
    """Sequential reference scan.

    Args:
        u: (b, l, d) input.  delta: (b, l, d) raw step (before softplus).
        A: (d, n) negative real state matrix (already ``-exp(A_log)``).
        B, C: (b, l, n) input and output projections.  D: (d,) skip.
        z: optional (b, l, d) gate.  delta_bias: optional (d,) added before softplus.
    Returns:
        (b, l, d) tensor in u's dtype.
    """
    if delta_bias is not None:
        delta = delta + delta_bias
    delta = F.softplus(delta)
    b, l, d = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(l):
        dt = delta[:, t, :, None]  # (b, d, 1)
        h = torch.exp(dt * A) * h + dt * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1))
    y = torch.stack(ys, dim=1) + u * D
    if z is not None:
        y = y * F.silu(z)
    return y


def _triton_available() -> bool:
    try:
        from . import scan_triton  # noqa: F401
    except Exception:  # Triton missing or broken: fall back cleanly
        return False
    return True


def resolve_impl(impl: str, u: torch.Tensor) -> str:
    """The implementation ``impl`` means for tensors like ``u`` (``auto``: triton on CUDA when it imports)."""
    if impl not in SCAN_IMPLS:
        raise ValueError(f"scan impl must be one of {SCAN_IMPLS}, got {impl!r}")
    if impl == "auto":
        return "triton" if (u.is_cuda and _triton_available()) else "cpu"
    return impl


def selective_scan(u, delta, A, B, C, D, z=None, delta_bias=None, impl: str = "auto"):
    """Run the selective scan with the chosen implementation (arguments as in ``selective_scan_ref``)."""
    impl = resolve_impl(impl, u)
    if impl == "ref":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias)
    if impl == "triton":
        from .scan_triton import selective_scan_triton

        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias)
    from .scan_cpu import selective_scan_cpu

    return selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias)
